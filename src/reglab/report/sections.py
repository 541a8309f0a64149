"""report.md's tables: the results, sparsity against accuracy, and the run cost.

Results are the metrics a configuration is judged by (mean ± 95 % CI, Δ and p against the
baseline). Epochs run and wall time say what the runs cost, not how good they are: they get a
section of their own, as mean and range, never a t-test. A penalty study also gets the fraction of
zero weights next to the accuracy, per configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from reglab.report.intervals import SMALL_N, small_n_warning
from reglab.report.layout import short_label
from reglab.report.rows import ConfigRow
from reglab.sparsity import NEAR_ZERO

# Run bookkeeping, not a result: its own section in report.md, never t-tested.
UNTESTED = ("epochs_run", "wall_time_s", "best_epoch")
ZERO = "final/reg/zero_fraction"
NEAR = "final/reg/near_zero_fraction"
# The accuracy of the sparsity table: the first of these any run logged.
ACCURACIES = ("test/acc", "test/r2", "best/val/acc", "best/val/r2")
PENALTY_KEY = "regularization"


def is_search(rows: Sequence[ConfigRow]) -> bool:
    """Whether the rows are an Optuna study's trials (each run in a `trial_NNNN` folder)."""
    return bool(rows) and all(row.trial is not None for row in rows)


def row_name(row: ConfigRow, search: bool) -> str:
    """A trial's drawn parameters, short (`strength=0.0001758, lr=0.0004025`); else the label."""
    if not search:
        return row.label
    pairs = [(k, v) for k, v in row.key if k in row.shown]
    return short_label(pairs).replace("\n", " ")


def status(row: ConfigRow) -> str:
    """ok, pruned, failed or missing: a trial's state (the first run's, for a repeated one)."""
    ok = [job for job in row.jobs if job.status == "ok"]
    return "ok" if ok else (row.jobs[0].status if row.jobs else "missing")


def results_table(
    rows: Sequence[ConfigRow], metrics: Sequence[str], cell: Callable[[ConfigRow, str], str]
) -> list[str]:
    """The results: one line per configuration (per trial, with its number, for a search)."""
    shown = [m for m in metrics if m not in UNTESTED]
    search = is_search(rows)
    if search:
        lines = [
            "| trial | params | status | " + " | ".join(shown) + " |",
            "|" + " --- |" * (3 + len(shown)),
        ]
        for row in rows:
            cells = [cell(row, m) for m in shown]
            lines.append(
                f"| {row.trial} | {row_name(row, True)} | {status(row)} | "
                + " | ".join(cells)
                + " |"
            )
        return lines
    lines = [
        "| config | ok | failed | pruned | " + " | ".join(shown) + " |",
        "|" + " --- |" * (4 + len(shown)),
    ]
    for row in rows:
        cells = [cell(row, m) for m in shown]
        ok = len(row.jobs) - row.failed - row.pruned
        lines.append(
            f"| {row.label} | {ok} | {row.failed} | {row.pruned} | " + " | ".join(cells) + " |"
        )
    return lines


def small_n_note(rows: Sequence[ConfigRow], metrics: Sequence[str]) -> str:
    """A line saying which configurations have fewer than SMALL_N runs ('' if none, or a search:
    one run per trial is how a search works)."""
    shown = [m for m in metrics if m not in UNTESTED]
    if not shown or is_search(rows):
        return ""
    counts = [row.n(shown[0]) for row in rows]
    if small_n_warning(counts) is None:
        return ""
    few = [
        f"`{row.label}` (n = {n})" for row, n in zip(rows, counts, strict=True) if 0 < n < SMALL_N
    ]
    n = min(c for c in counts if c > 0)
    same = len(few) == sum(c > 0 for c in counts) and max(counts) == n
    where = f"n = {n} in every configuration" if same else ", ".join(few)
    return (
        f"**Few runs** ({where}): {_what_few_runs_mean(counts)}. "
        f"Run more seeds (n ≥ {SMALL_N}) before reading a difference from these."
    )


def _what_few_runs_mean(counts: Sequence[int]) -> str:
    # "a single run has no interval; at n = 2 the 95 % CI is wide (t = 12.7), ..."
    small = sorted({n for n in counts if 0 < n < SMALL_N})
    parts = ["a single run has no interval"] if 1 in small else []
    for n in (n for n in small if n > 1):
        t = float(stats.t.ppf(0.975, n - 1))
        parts.append(f"at n = {n} the 95 % CI is wide (t = {t:.3g}), clipped to the metric's range")
    return "; ".join(parts)


def _mean(row: ConfigRow, metric: str) -> float | None:
    values = [
        job.metrics[metric] for job in row.jobs if job.status == "ok" and metric in job.metrics
    ]
    return float(np.mean(values)) if values else None


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def sparsity_table(rows: Sequence[ConfigRow]) -> list[str]:
    """Zero and near-zero weight fractions against the accuracy, mean over each configuration's
    runs; [] unless the penalty varies between configurations and the runs logged a zero fraction.
    """
    if not rows:
        return []
    varies = any(k == PENALTY_KEY or k.startswith(PENALTY_KEY + ".") for k in rows[0].shown)
    logged = {m for row in rows for job in row.jobs for m in job.metrics}
    accuracy = next((m for m in ACCURACIES if m in logged), None)
    if not varies or ZERO not in logged or accuracy is None:
        return []
    search = is_search(rows)
    lead = "| trial | params |" if search else "| config |"
    lines = [
        "## Sparsity against accuracy",
        "",
        f"Mean over each configuration's runs: the fraction of weights exactly zero and of those "
        f"with |w| < {NEAR_ZERO:g} after the last epoch, against {accuracy}.",
        "",
        f"{lead} n | zero weights | near zero (< {NEAR_ZERO:g}) | {accuracy} |",
        "|" + " --- |" * (5 + search),
    ]
    for row in rows:
        n = sum(job.status == "ok" for job in row.jobs)
        if not n:
            continue  # failed or pruned: nothing to show
        name = f"{row.trial} | {row_name(row, True)}" if search else row.label
        mean = _mean(row, accuracy)
        lines.append(
            f"| {name} | {n} | {_percent(_mean(row, ZERO))} | {_percent(_mean(row, NEAR))} | "
            f"{'' if mean is None else f'{mean:.4g}'} |"
        )
    return lines


def _spread(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    mean = float(np.mean(values))
    return f"{mean:.3g}" if low == high else f"{mean:.3g} ({low:.3g}–{high:.3g})"


def cost_table(rows: Sequence[ConfigRow], metrics: Sequence[str]) -> list[str]:
    """Epochs run and wall time per configuration: mean (min–max over its runs); [] without."""
    cost = [m for m in metrics if m in UNTESTED]
    if not cost:
        return []
    search = is_search(rows)
    lead = "| trial | params |" if search else "| config |"
    lines = [
        "## Run cost",
        "",
        "What the runs took, not a result: mean (min–max over the configuration's runs).",
        "",
        f"{lead} " + " | ".join(cost) + " |",
        "|" + " --- |" * (len(cost) + 1 + search),
    ]
    for row in rows:
        if not any(row.values.get(m) for m in cost):
            continue  # failed or pruned: nothing recorded
        name = f"{row.trial} | {row_name(row, True)}" if search else row.label
        lines.append(
            f"| {name} | " + " | ".join(_spread(row.values.get(m, [])) for m in cost) + " |"
        )
    return lines
