"""Report plots (matplotlib, Agg): metric vs strength, configuration bars, val-loss curves."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import numpy as np  # noqa: E402

from reglab.report.table import ConfigRow  # noqa: E402

STRENGTH = "regularization.strength"
METHOD = "regularization"


def plot_strength(rows: list[ConfigRow], metric: str, path: Path) -> Path | None:
    """Metric against strength, log x, error bars, one line per method (None if no strengths)."""
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in rows:
        key = dict(row.key)
        if STRENGTH in key and row.n(metric):
            rest = ",".join(f"{k}={v}" for k, v in row.key if k in row.shown and k != STRENGTH)
            lines[rest or key.get(METHOD, "")].append(
                (float(key[STRENGTH]), row.mean(metric), row.std(metric))
            )
    if not lines:
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in sorted(lines.items()):
        points.sort()
        x, y, err = (np.array(v) for v in zip(*points, strict=True))
        axes.errorbar(x, y, yerr=np.nan_to_num(err), marker="o", capsize=3, label=label)
    baseline = next((r for r in rows if dict(r.key).get(METHOD) == "none" and r.n(metric)), None)
    if baseline is not None:
        axes.axhline(
            baseline.mean(metric), color="grey", linestyle="--", label="regularization=none"
        )
    axes.set_xscale("log")
    axes.set_xlabel(STRENGTH)
    axes.set_ylabel(metric)
    axes.legend(fontsize=7, loc="best")
    axes.set_title(f"{metric} vs strength (mean ± std)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_bars(rows: list[ConfigRow], metric: str, path: Path) -> Path | None:
    """One bar per configuration: mean ± std of `metric`."""
    rows = [row for row in rows if row.n(metric)]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(max(5, 0.6 * len(rows) + 2), 4))
    means = [row.mean(metric) for row in rows]
    errors = [0 if math.isnan(row.std(metric)) else row.std(metric) for row in rows]
    axes.bar(range(len(rows)), means, yerr=errors, capsize=3, color="tab:blue")
    axes.set_xticks(
        range(len(rows)), [row.label for row in rows], rotation=60, ha="right", fontsize=7
    )
    axes.set_ylabel(metric)
    low = min(m - e for m, e in zip(means, errors, strict=True))
    high = max(m + e for m, e in zip(means, errors, strict=True))
    axes.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    axes.set_title(f"{metric} per configuration (mean ± std)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_curves(rows: list[ConfigRow], path: Path, metric: str = "val/loss") -> Path | None:
    """Mean per-epoch curve of `metric` per configuration, from the runs' histories."""
    figure, axes = plt.subplots(figsize=(6, 4))
    drawn = False
    for row in rows:
        per_epoch: dict[int, list[float]] = defaultdict(list)
        for job in row.jobs:
            for entry in job.history:
                if metric in entry:
                    per_epoch[int(entry["epoch"])].append(entry[metric])
        if per_epoch:
            epochs = sorted(per_epoch)
            axes.plot(epochs, [np.mean(per_epoch[e]) for e in epochs], label=row.label)
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"mean {metric}")
    axes.legend(fontsize=6)
    axes.set_title(f"mean {metric} per configuration")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
