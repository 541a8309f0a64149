"""Group jobs by configuration and compute n, mean ± std, 95 % CI and Welch's t-test vs baseline.

report.csv keeps every digit; report.md prints each mean to the precision of its confidence
interval (`mean_ci`: `0.968 ± 0.004`).

A configuration is an effective config (`Job.effective_key`); a job repeating another's run
(same effective config and seed, e.g. `regularization=none` swept across strengths it ignores)
is merged into it, so that each seed is one sample.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
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
    duplicates: list[Job] = field(default_factory=list)  # repeats of a run in `jobs`, not counted
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
# Run bookkeeping, not a result: tabulated, but not tested against the baseline.
UNTESTED = ("epochs_run", "wall_time_s", "best_epoch")


def merge_duplicates(jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    """(one job per run, the repeats): a run is an effective config and a seed; an ok job is kept."""
    kept: dict[tuple[str, str], Job] = {}
    for job in jobs:
        first = kept.setdefault(job.run_key, job)
        if first.status != "ok" and job.status == "ok":
            kept[job.run_key] = job
    chosen = {id(job) for job in kept.values()}
    repeats = [job for job in jobs if id(job) not in chosen]
    return [job for job in jobs if id(job) in chosen], repeats


def _value_order(value: str | None) -> tuple[int, float, str]:
    # Unset first, then numbers by value (1e-4 < 1e-3 < 1e-2 < 0.1), then text alphabetically.
    if value is None:
        return (0, 0.0, "")
    try:
        number = float(value)
    except ValueError:
        return (2, 0.0, value)
    return (2, 0.0, value) if math.isnan(number) else (1, number, value)


def _row_order(row: ConfigRow) -> tuple:
    values = dict(row.key)
    return (not row.is_baseline, *(_value_order(values.get(k)) for k in row.shown))


def summarize(jobs: list[Job], metrics: list[str], baseline: str | None = None) -> list[ConfigRow]:
    """One row per configuration, baseline first, then by swept values (numbers as numbers).

    Repeated runs are merged (`merge_duplicates`). Each row carries differences and Welch
    p-values against the baseline (no p for run bookkeeping such as wall time). The baseline is
    the configuration whose label contains `baseline` (default: the one with
    `regularization=none`, else the first swept `<group>=none` or `<group>=zero` — the options
    that switch a control off, as in a dropout or augmentation ablation); without one, no
    comparison is made.
    """
    runs, repeats = merge_duplicates(jobs)
    rows: dict[str, ConfigRow] = {}
    for job in runs:
        row = rows.setdefault(job.effective_key, ConfigRow(key=job.config_key))
        row.jobs.append(job)
        if job.status == "ok":
            for metric in metrics:
                if metric in job.metrics:
                    row.values.setdefault(metric, []).append(job.metrics[metric])
        elif job.status == "pruned":
            row.pruned += 1
        else:
            row.failed += 1
    for job in repeats:
        rows[job.effective_key].duplicates.append(job)
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
                if len(a) > 1 and len(b) > 1 and metric not in UNTESTED:
                    with warnings.catch_warnings():  # identical samples: p is nan, say nothing
                        warnings.simplefilter("ignore", RuntimeWarning)
                        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
                    if not math.isnan(p):
                        row.p_value[metric] = p
    return sorted(ordered, key=_row_order)


def _fmt(value: float) -> str:
    # A value without a spread (a single run): 4 significant digits.
    return "" if math.isnan(value) else f"{value:.4g}"


def _exact(value: float) -> str:
    # The csv is for further computation: every digit (repr round-trips a float).
    return "" if math.isnan(value) else repr(float(value))


# A ± below 1e-6 (float noise of identical runs) would print a column of zeros: significant
# digits instead.
FINEST_PLACE = -6


def _decimal(value: float) -> Decimal:
    # Rounded from the shortest decimal that reads back as `value` (0.85, not 0.84999...).
    return Decimal(repr(float(value)))


def ci_place(halfwidth: float) -> int | None:
    """Decimal place (exponent of ten) to which a value with ± `halfwidth` is worth printing.

    The ± keeps 1 significant digit, 2 when its first digit is a 1 (0.004, 0.2, 3 and 40, but
    0.013, 0.16 and 0.0096 -> 0.010), a common rule: a lone 1 would print 0.0149 as 0.01, a
    third off, where a lone 2..9 is off by a fifth at most. (The Particle Data Group keeps two
    digits up to a 354 in the first three, for a leading 2 or 3 too; we keep the simpler rule.)
    None without a positive ±.
    """
    if not math.isfinite(halfwidth) or halfwidth <= 0:
        return None
    h = _decimal(halfwidth)
    top = h.adjusted()  # the exponent of its first significant digit
    if h.quantize(Decimal(1).scaleb(top), ROUND_HALF_UP).adjusted() > top:
        return top  # 0.0096 rounds up to 0.01: two digits, 0.010
    return top - 1 if int(h.scaleb(-top)) == 1 else top


def at_place(value: float, place: int, sign: bool = False) -> str:
    """`value` rounded (half away from zero) to 10**place, in fixed notation; never "-0"."""
    rounded = _decimal(value).quantize(Decimal(1).scaleb(place), ROUND_HALF_UP)
    if rounded.is_zero():
        rounded = abs(rounded)
    text = format(rounded, "f")
    return f"+{text}" if sign and not text.startswith("-") else text


def mean_ci(mean: float, halfwidth: float) -> str:
    """`mean ± halfwidth` printed to the confidence they deserve: `0.968 ± 0.004`.

    Both end at the last significant digit of the ± (`ci_place`). A zero ± (identical runs) keeps
    the mean at 4 significant digits; a ± under 1e-6 (float noise) falls back to significant
    digits (`FINEST_PLACE`).
    """
    place = ci_place(halfwidth)
    if place is None:
        return f"{_fmt(mean)} ± 0" if halfwidth == 0 else _fmt(mean)
    if place < FINEST_PLACE:
        return f"{mean:.4g} ± {halfwidth:.2g}"
    return f"{at_place(mean, place)} ± {at_place(halfwidth, place)}"


def _cell(row: ConfigRow, metric: str) -> str:
    """`mean ± ci95; Δ, p`, rounded to the ±; a single run shows its value alone (4 digits)."""
    if not row.n(metric):
        return ""
    halfwidth = row.ci95(metric)  # nan for a single run: its value alone
    cell, place = mean_ci(row.mean(metric), halfwidth), ci_place(halfwidth)
    if metric in row.delta:
        # Δ is as uncertain as this row's mean at least (the baseline's spread adds to it): the
        # row's decimal place never shows more than the data support.
        delta = row.delta[metric]
        usable = place is not None and place >= FINEST_PLACE
        cell += f"; Δ {at_place(delta, place, sign=True) if usable else f'{delta:+.3g}'}"
    if metric in row.p_value:
        cell += f", p={row.p_value[metric]:.2g}"
    return cell


def _merged_note(rows: list[ConfigRow]) -> str:
    merged = [(row.label, len(row.duplicates)) for row in rows if row.duplicates]
    if not merged:
        return ""
    total = sum(count for _, count in merged)
    where = ", ".join(f"{count} into `{label}`" for label, count in merged)
    return (
        f"\n\nmerged {total} duplicate run{'s' if total > 1 else ''} "
        f"(identical effective config and seed): {where}."
    )


def write_tables(
    rows: list[ConfigRow], metrics: list[str], folder: Path, tags: list[str] | None = None
) -> tuple[Path, Path]:
    """report.csv (one column per statistic, every digit) and report.md (mean ± 95 % CI, Δ, p)."""
    csv_path, md_path = folder / "report.csv", folder / "report.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["config", "n_ok", "n_failed", "n_pruned", "n_duplicates"]
        for m in metrics:
            header += [f"{m} n", f"{m} mean", f"{m} std", f"{m} ci95", f"{m} delta", f"{m} p"]
        writer.writerow(header)
        for row in rows:
            ok = len(row.jobs) - row.failed - row.pruned
            line = [row.label, ok, row.failed, row.pruned, len(row.duplicates)]
            for m in metrics:
                line += [
                    row.n(m),
                    _exact(row.mean(m)),
                    _exact(row.std(m)),
                    _exact(row.ci95(m)),
                    _exact(row.delta.get(m, math.nan)),
                    _exact(row.p_value.get(m, math.nan)),
                ]
            writer.writerow(line)
    lines = [
        "| config | ok | failed | pruned | " + " | ".join(metrics) + " |",
        "|" + " --- |" * (4 + len(metrics)),
    ]
    for row in rows:
        cells = [_cell(row, m) for m in metrics]
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
        "# Ablation report\n\n"
        "mean ± 95 % CI half-width (Student t), rounded to the ±'s first significant digit "
        "(two when it is a 1); a single run's value alone; every digit and the std in "
        f"report.csv; {against}."
        + _merged_note(rows)
        + (f" Tags of these runs: {', '.join(tags)}." if tags else "")
        + "\n\n"
        + "\n".join(lines)
        + "\n"
    )
    return csv_path, md_path
