"""Group jobs by configuration and compute n, mean ± std, 95 % CI and Welch's t-test vs baseline."""

from __future__ import annotations

import csv
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from reglab.report.collect import Job


@dataclass
class ConfigRow:
    """One configuration: its runs' values per metric and the comparison with the baseline."""

    key: tuple[tuple[str, str], ...]
    shown: tuple[str, ...] = ()  # override keys that differ between configurations
    values: dict[str, list[float]] = field(default_factory=dict)
    failed: int = 0
    pruned: int = 0
    jobs: list[Job] = field(default_factory=list)
    delta: dict[str, float] = field(default_factory=dict)
    p_value: dict[str, float] = field(default_factory=dict)
    is_baseline: bool = False

    @property
    def label(self) -> str:
        """`k=v,k=v` of the overrides that tell it apart from the other configurations."""
        return ",".join(f"{k}={v}" for k, v in self.key if k in self.shown) or "default"

    def n(self, metric: str) -> int:
        """Number of successful runs that logged `metric`."""
        return len(self.values.get(metric, []))

    def mean(self, metric: str) -> float:
        """Mean over runs (nan without runs)."""
        values = self.values.get(metric, [])
        return float(np.mean(values)) if values else math.nan

    def std(self, metric: str) -> float:
        """Sample standard deviation (ddof 1; nan below 2 runs)."""
        values = self.values.get(metric, [])
        return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan

    def ci95(self, metric: str) -> float:
        """Half-width of the 95 % confidence interval of the mean (Student t)."""
        n = self.n(metric)
        return (
            float(stats.t.ppf(0.975, n - 1) * self.std(metric) / math.sqrt(n))
            if n > 1
            else math.nan
        )


def default_metrics(jobs: list[Job]) -> list[str]:
    """Test accuracy or R², best val loss, epochs, wall time, and sparsity where logged."""
    logged = {name for job in jobs for name in job.metrics}
    wanted = [
        "test/acc",
        "test/r2",
        "best/val/loss",
        "epochs_run",
        "wall_time_s",
        "final/reg/zero_fraction",
    ]
    return [name for name in wanted if name in logged]


# Group options that switch their control off: the default baseline of an ablation.
OFF_OPTIONS = ("none", "zero")


def summarize(jobs: list[Job], metrics: list[str], baseline: str | None = None) -> list[ConfigRow]:
    """One row per configuration, with differences and Welch p-values against the baseline.

    The baseline is the configuration whose label contains `baseline` (default: the one with
    `regularization=none`, else the first swept `<group>=none` or `<group>=zero` — the options
    that switch a control off, as in a dropout or augmentation ablation); without one, no
    comparison is made.
    """
    rows: dict[tuple, ConfigRow] = defaultdict(lambda: ConfigRow(key=()))
    for job in jobs:
        row = rows[job.config_key]
        row.key = job.config_key
        row.jobs.append(job)
        if job.status == "ok":
            for metric in metrics:
                if metric in job.metrics:
                    row.values.setdefault(metric, []).append(job.metrics[metric])
        elif job.status == "pruned":
            row.pruned += 1
        else:
            row.failed += 1
    ordered = list(rows.values())
    # Overrides shared by every configuration (logger=none, max_epochs, ...) only clutter labels.
    keys = {k for row in ordered for k, _ in row.key}
    shown = tuple(k for k in sorted(keys) if len({dict(r.key).get(k) for r in ordered}) > 1)
    for row in ordered:
        row.shown = shown
    candidates = (
        [baseline]
        if baseline
        else ["regularization=none"] + [f"{k}={off}" for off in OFF_OPTIONS for k in shown]
    )
    base = next(
        (row for wanted in candidates for row in ordered if wanted in row.label.split(",")), None
    )
    if base is not None:
        base.is_baseline = True
    for row in ordered:
        if base is None or row is base:
            continue
        for metric in metrics:
            a, b = row.values.get(metric, []), base.values.get(metric, [])
            if a and b:
                row.delta[metric] = float(np.mean(a) - np.mean(b))
                if len(a) > 1 and len(b) > 1:
                    with warnings.catch_warnings():  # identical samples: p is nan, say nothing
                        warnings.simplefilter("ignore", RuntimeWarning)
                        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
                    if not math.isnan(p):
                        row.p_value[metric] = p
    return ordered


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4g}"


def write_tables(rows: list[ConfigRow], metrics: list[str], folder: Path) -> tuple[Path, Path]:
    """report.csv (one column per statistic) and report.md (mean ± std (95 % CI), Δ, p)."""
    csv_path, md_path = folder / "report.csv", folder / "report.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["config", "n_ok", "n_failed", "n_pruned"]
        for m in metrics:
            header += [f"{m} n", f"{m} mean", f"{m} std", f"{m} ci95", f"{m} delta", f"{m} p"]
        writer.writerow(header)
        for row in rows:
            line = [row.label, len(row.jobs) - row.failed - row.pruned, row.failed, row.pruned]
            for m in metrics:
                line += [
                    row.n(m),
                    _fmt(row.mean(m)),
                    _fmt(row.std(m)),
                    _fmt(row.ci95(m)),
                    _fmt(row.delta.get(m, math.nan)),
                    _fmt(row.p_value.get(m, math.nan)),
                ]
            writer.writerow(line)
    lines = [
        "| config | ok | failed | pruned | " + " | ".join(metrics) + " |",
        "|" + " --- |" * (4 + len(metrics)),
    ]
    for row in rows:
        cells = []
        for m in metrics:
            if not row.n(m):
                cells.append("")
                continue
            cell = f"{_fmt(row.mean(m))} ± {_fmt(row.std(m))} (±{_fmt(row.ci95(m))})"
            if m in row.delta:
                cell += f"; Δ {row.delta[m]:+.3g}"
            if m in row.p_value:
                cell += f", p={row.p_value[m]:.2g}"
            cells.append(cell)
        ok = len(row.jobs) - row.failed - row.pruned
        lines.append(
            f"| {row.label} | {ok} | {row.failed} | {row.pruned} | " + " | ".join(cells) + " |"
        )
    base = next((row for row in rows if row.is_baseline), None)
    against = (
        f"Δ and Welch p against the baseline `{base.label}`"
        if base
        else "no baseline in this sweep (name one with --baseline key=value)"
    )
    md_path.write_text(
        f"# Ablation report\n\nmean ± std (95 % CI half-width); {against}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    return csv_path, md_path
