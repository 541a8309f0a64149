"""`reglab-report <sweep folder>` / `python scripts/report.py <sweep folder>`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reglab.report.collect import collect_jobs
from reglab.report.optuna_plots import plot_study
from reglab.report.plots import plot_bars, plot_curves, plot_strength
from reglab.report.table import default_metrics, summarize, write_tables


def build_report(
    sweep_dir: Path, metrics: list[str] | None = None, baseline: str | None = None
) -> list[Path]:
    """Write report.md, report.csv and the PNG plots into `sweep_dir`; return their paths."""
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise SystemExit(f"reglab-report: error: no job folders (with .hydra/) under {sweep_dir}")
    metrics = metrics or default_metrics(jobs)
    rows = summarize(jobs, metrics, baseline)
    written = list(write_tables(rows, metrics, sweep_dir))
    primary = metrics[0] if metrics else "best/val/loss"
    for plot in (
        plot_strength(rows, primary, sweep_dir / "report_strength.png"),
        plot_bars(rows, primary, sweep_dir / "report_bars.png"),
        plot_curves(rows, sweep_dir / "report_val_loss.png"),
    ):
        if plot is not None:
            written.append(plot)
    return written + plot_study(sweep_dir)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the report, print where it went."""
    parser = argparse.ArgumentParser(description="Ablation report of a reglab sweep folder.")
    parser.add_argument("sweep_dir", type=Path, help="outputs/multirun/<date>/<time>_<task>")
    parser.add_argument(
        "--metrics", nargs="+", help="metrics to tabulate (default: test acc/R², ...)"
    )
    parser.add_argument(
        "--baseline", help="override=value of the baseline (default regularization=none)"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"reglab-report: error: {args.sweep_dir} is not a folder")
    for path in build_report(args.sweep_dir, args.metrics, args.baseline):
        print(path)
    print((args.sweep_dir / "report.md").read_text(), file=sys.stdout)


if __name__ == "__main__":
    main()
