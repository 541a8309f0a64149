"""One configuration of a report: its runs' values per metric, their statistics, and the
comparison with the baseline. The tables (table.py, sections.py) and the plots read these rows."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from reglab.report.collect import Job
from reglab.report.intervals import mean_interval


def trial_number(folder: Path) -> int | None:
    """42 for a search's trial folder `trial_0042`; None for any other folder."""
    match = re.fullmatch(r"trial_([0-9]+)", folder.name)
    return int(match.group(1)) if match else None


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

    def interval(self, metric: str) -> tuple[float, float]:
        """The 95 % CI of the mean clipped to the metric's range (an accuracy's within [0, 1])."""
        return mean_interval(self.values.get(metric, []), metric)

    @property
    def trial(self) -> int | None:
        """The Optuna trial number of its run (a search's `trial_NNNN` folder), else None."""
        numbers = [n for n in (trial_number(job.folder) for job in self.jobs) if n is not None]
        return min(numbers) if numbers else None
