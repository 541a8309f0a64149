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
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
from scipy import stats

from reglab.report.collect import Job
from reglab.report.intervals import is_clipped
from reglab.report.rows import ConfigRow
from reglab.report.sections import (
    UNTESTED,
    cost_table,
    is_search,
    results_table,
    small_n_note,
    sparsity_table,
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
    trial = math.inf if row.trial is None else row.trial  # a search: trial order
    return (not row.is_baseline, trial, *(_value_order(values.get(k)) for k in row.shown))


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
    if is_clipped(row.values[metric], metric) and place is not None and place >= FINEST_PLACE:
        # mean ± h would claim values the metric cannot take (an accuracy of 1.3): the interval
        # clipped to its range instead, at the same decimal place.
        low, high = row.interval(metric)
        mean = at_place(row.mean(metric), place)
        cell = f"{mean} [{at_place(low, place)}, {at_place(high, place)}]"
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
    rows: list[ConfigRow],
    metrics: list[str],
    folder: Path,
    tags: list[str] | None = None,
    *,
    title: str = "Ablation report",
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """report.csv (one column per statistic, every digit) and report.md (mean ± 95 % CI, Δ, p;
    sparsity against accuracy; run cost).

    `tags` are named in report.md; `notes` (say, on an Optuna study's plots) follow the tables.
    A search's rows carry their trial number (a `trial` column in both files).
    """
    csv_path, md_path = folder / "report.csv", folder / "report.md"
    search = is_search(rows)
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        header = ["config", *(["trial"] if search else []), "n_ok", "n_failed", "n_pruned"]
        header.append("n_duplicates")
        for m in metrics:
            header += [f"{m} n", f"{m} mean", f"{m} std", f"{m} ci95", f"{m} delta", f"{m} p"]
            header += [f"{m} ci low", f"{m} ci high"]
        writer.writerow(header)
        for row in rows:
            ok = len(row.jobs) - row.failed - row.pruned
            line = [row.label, *([row.trial] if search else [])]
            line += [ok, row.failed, row.pruned, len(row.duplicates)]
            for m in metrics:
                line += [
                    row.n(m),
                    _exact(row.mean(m)),
                    _exact(row.std(m)),
                    _exact(row.ci95(m)),
                    _exact(row.delta.get(m, math.nan)),
                    _exact(row.p_value.get(m, math.nan)),
                    *(_exact(bound) for bound in row.interval(m)),
                ]
            writer.writerow(line)
    base = next((row for row in rows if row.is_baseline), None)
    if search:
        against = "one run per trial, in trial order; parameters to 4 significant digits"
    elif base:
        against = f"Δ and Welch p against the baseline `{base.label}`"
    else:
        against = "no baseline in this sweep (name one with --baseline key=value)"
    sections = [
        results_table(rows, metrics, _cell),
        [small_n_note(rows, metrics)],
        sparsity_table(rows),
        cost_table(rows, metrics),
        list(notes),
    ]
    md_path.write_text(
        f"# {title}\n\n"
        "mean ± 95 % CI half-width (Student t), rounded to the ±'s first significant digit "
        "(two when it is a 1); where that interval passes the metric's range (an accuracy "
        "outside [0, 1]), mean [low, high] of the interval clipped to it; a single run's value "
        "alone; every digit, the std and the clipped CI in report.csv; "
        f"{against}."
        + _merged_note(rows)
        + (f" Tags of these runs: {', '.join(tags)}." if tags else "")
        + "\n\n"
        + "\n\n".join("\n".join(lines) for lines in sections if any(lines))
        + "\n"
    )
    return csv_path, md_path
