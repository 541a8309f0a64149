"""Confidence intervals of a metric's mean that stay within the values the metric can take.

A Student-t interval at n = 2 is mean ± 12.7·s/√2: for an accuracy of 0.5 ± 0.3 that runs from
-3 to 4. An accuracy, F1 or fraction of zero weights lies in [0, 1], and so does its mean; the
interval is clipped to the metric's bounds (`BOUNDS`, by the last part of the metric's name),
which is the t-interval intersected with what the mean can be. Below `SMALL_N` runs the plots
and report.md say so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

INF = math.inf
UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, INF)
# What a metric's value can be, by the last part of its name (`test/acc` -> `acc`).
BOUNDS: dict[str, tuple[float, float]] = {
    "acc": UNIT,
    "mc_acc": UNIT,
    "f1": UNIT,
    "zero_fraction": UNIT,
    "near_zero_fraction": UNIT,
    "r2": (-INF, 1.0),
    "loss": NON_NEGATIVE,
    "mse": NON_NEGATIVE,
    "mae": NON_NEGATIVE,
    "mc_loss": NON_NEGATIVE,
    "mc_entropy": NON_NEGATIVE,
    "mc_spread": NON_NEGATIVE,
    "l1_norm": NON_NEGATIVE,
    "l2_norm": NON_NEGATIVE,
    "epochs_run": NON_NEGATIVE,
    "wall_time_s": NON_NEGATIVE,
}
# Fewer runs than this per configuration: the plots and report.md carry a warning.
SMALL_N = 3
LEVEL = 0.95


def bounds(metric: str) -> tuple[float, float]:
    """The values `metric` can take ((-inf, inf) for a metric not in BOUNDS)."""
    return BOUNDS.get(metric.rsplit("/", 1)[-1], (-INF, INF))


def mean_interval(values: Sequence[float], metric: str) -> tuple[float, float]:
    """The 95 % Student-t interval of the mean of `values`, clipped to `bounds(metric)`.

    (nan, nan) for fewer than 2 values; (mean, mean) for identical values.
    """
    if len(values) < 2:
        return math.nan, math.nan
    mean, sem = float(np.mean(values)), float(stats.sem(values))
    if sem == 0 or not math.isfinite(sem):
        low, high = mean, mean
    else:
        low, high = (float(v) for v in stats.t.interval(LEVEL, len(values) - 1, mean, sem))
    floor, ceiling = bounds(metric)
    return max(low, floor), min(high, ceiling)


def is_clipped(values: Sequence[float], metric: str) -> bool:
    """Whether the unclipped interval of `values` reaches past the metric's bounds."""
    if len(values) < 2 or float(stats.sem(values)) == 0:
        return False
    low, high = stats.t.interval(LEVEL, len(values) - 1, np.mean(values), stats.sem(values))
    floor, ceiling = bounds(metric)
    return bool(low < floor or high > ceiling)


def small_n_warning(counts: Sequence[int]) -> str | None:
    """`n = 2: 95 % CIs are wide (t = 12.7), clipped to the metric's range` where the smallest
    of `counts` (runs per configuration) is below SMALL_N; None otherwise."""
    counts = [n for n in counts if n > 0]
    if not counts or min(counts) >= SMALL_N:
        return None
    n = min(counts)
    some = "" if max(counts) == n else "some configurations have "
    if n == 1:
        return f"{some}n = 1: a single run, no interval"
    t = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1))
    return f"{some}n = {n}: 95 % CIs are wide (t = {t:.3g}), clipped to the metric's range"
