"""`reglab-report <sweep folder>` / `python scripts/report.py <sweep folder>`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reglab.report.collect import Job, collect_jobs
from reglab.report.optuna_plots import describe_study, plot_study
from reglab.report.plots import plot_bars, plot_curves, plot_strength
from reglab.report.published import logged_metrics, published_table
from reglab.report.sections import is_search
from reglab.report.table import ConfigRow, default_metrics, summarize, write_tables


def build_report(
    sweep_dir: Path,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    tags: list[str] | None = None,
) -> list[Path]:
    """Write report.md, report.csv and the PNG plots into `sweep_dir`; return their paths.

    With `tags`, only the jobs tagged with all of them are reported. report.md names the runs'
    tags unless every run has the default ones. A search folder's report is titled with its
    study and metric. A paper experiment's report shows the published numbers beside the
    measured ones (reglab.report.published).
    """
    jobs = collect_jobs(sweep_dir, tags)
    if not jobs:
        wanted = f" tagged {', '.join(tags)}" if tags else ""
        raise SystemExit(
            f"reglab-report: error: no job folders (with .hydra/){wanted} under {sweep_dir}"
        )
    metrics = metrics or default_metrics(jobs)
    paper_metrics = [m for m in logged_metrics(jobs) if m not in metrics]
    rows = summarize(jobs, [*metrics, *paper_metrics], baseline)
    study = describe_study(sweep_dir)
    title = study.title if study else "Search report" if is_search(rows) else "Ablation report"
    notes = published_table(rows, jobs) + (study.notes() if study else [])
    written = list(
        write_tables(rows, metrics, sweep_dir, shown_tags(jobs), title=title, notes=notes)
    )
    primary = metrics[0] if metrics else "best/val/loss"
    return written + build_plots(rows, sweep_dir, primary) + plot_study(sweep_dir)


# conf/train.yaml's `tags` (a test keeps the two equal): on every run nobody tagged, so not news.
DEFAULT_TAGS = ("dev",)


def shown_tags(jobs: list[Job]) -> list[str]:
    """The runs' tags, for report.md; [] where every run has the default tags (or none)."""
    untagged = {(), tuple(sorted(DEFAULT_TAGS))}
    if all(tuple(sorted(job.tags)) in untagged for job in jobs):
        return []
    return sorted({tag for job in jobs for tag in job.tags})


def build_plots(rows: list[ConfigRow], folder: Path, metric: str) -> list[Path]:
    """report_strength.png, report_bars.png (of `metric`) and report_val_loss.png, where drawable."""
    plots = (
        plot_strength(rows, metric, folder / "report_strength.png"),
        plot_bars(rows, metric, folder / "report_bars.png"),
        plot_curves(rows, folder / "report_val_loss.png"),
    )
    return [path for path in plots if path is not None]


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
    parser.add_argument("--tags", nargs="+", help="report only the jobs with all these tags")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise SystemExit(f"reglab-report: error: {args.sweep_dir} is not a folder")
    for path in build_report(args.sweep_dir, args.metrics, args.baseline, args.tags):
        print(path)
    print((args.sweep_dir / "report.md").read_text(), file=sys.stdout)


if __name__ == "__main__":
    main()
