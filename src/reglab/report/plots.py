"""Report plots (matplotlib, Agg): metric vs strength, configuration bars, val-loss curves.

Error bars are the 95 % confidence interval of the mean, as in report.md. Each plot has a
`*_figure` function that draws it (tested for its layout) and a `plot_*` function that saves it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reglab.config import IMPROVES_UPWARD
from reglab.report.layout import (
    MAX_LEGEND,
    OTHERS_COLOR,
    TITLE_WIDTH,
    fit_contents,
    label_at_most,
    legend_beside,
    new_figure,
    save,
    short_label,
    widen_for_ticks,
    wrap,
)
from reglab.report.table import ConfigRow

STRENGTH = "regularization.strength"
METHOD = "regularization"


def row_label(row: ConfigRow, leave_out: tuple[str, ...] = ()) -> str:
    """The short, wrapped label of a configuration (its differing overrides)."""
    return short_label((k, v) for k, v in row.key if k in row.shown and k not in leave_out)


def _halfwidth(row: ConfigRow, metric: str) -> float:
    return 0.0 if math.isnan(row.ci95(metric)) else row.ci95(metric)


def strength_figure(rows: list[ConfigRow], metric: str) -> Figure | None:
    """Metric against strength, log x, one line per setting of the other overrides.

    Where no setting has two strengths (an Optuna study: every trial its own configuration)
    there is nothing to connect: the configurations are one scatter. None if no strengths.
    """
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in rows:
        key = dict(row.key)
        if STRENGTH in key and row.n(metric):
            label = row_label(row, leave_out=(STRENGTH,))
            point = (float(key[STRENGTH]), row.mean(metric), _halfwidth(row, metric))
            lines[label].append(point)
    if not lines:
        return None
    figure, axes = new_figure()
    others = 0
    if max(len(points) for points in lines.values()) < 2:
        x, y, err = (np.array(v) for v in zip(*sum(lines.values(), []), strict=True))
        axes.errorbar(x, y, yerr=err, fmt="o", capsize=3, label="configurations")
    else:
        # The settings with the most strengths get a colour and a name; the rest are grey.
        order = sorted(lines, key=lambda label: (-len(lines[label]), label))
        names = label_at_most(order, range(MAX_LEGEND))
        for label, name in zip(order, names, strict=True):
            x, y, err = (np.array(v) for v in zip(*sorted(lines[label]), strict=True))
            style = {"label": name} if name else {"color": OTHERS_COLOR, "zorder": 1}
            axes.errorbar(x, y, yerr=err, marker="o", capsize=3, **style)
        others = names.count(None)
    baseline = next((r for r in rows if dict(r.key).get(METHOD) == "none" and r.n(metric)), None)
    if baseline is not None:
        axes.axhline(
            baseline.mean(metric), color="grey", linestyle="--", label="regularization=none"
        )
    axes.set_xscale("log")
    axes.set_xlabel(STRENGTH)
    axes.set_ylabel(metric)
    axes.set_title(wrap(f"{metric} vs strength (mean ± 95 % CI)", TITLE_WIDTH, True))
    legend_beside(figure, axes, others=others)
    return fit_contents(figure)


def bars_figure(rows: list[ConfigRow], metric: str) -> Figure | None:
    """One horizontal bar per configuration, top to bottom in report order: mean ± 95 % CI."""
    rows = [row for row in rows if row.n(metric)]
    if not rows:
        return None
    labels = [row_label(row) for row in rows]
    lines = sum(label.count("\n") + 1 for label in labels)
    figure, axes = new_figure(4.0, max(2.5, 0.16 * lines + 0.3 * len(rows) + 1.0))
    means = [row.mean(metric) for row in rows]
    errors = [_halfwidth(row, metric) for row in rows]
    colors = ["grey" if row.is_baseline else "tab:blue" for row in rows]
    axes.barh(range(len(rows)), means, xerr=errors, capsize=3, color=colors)
    axes.set_yticks(range(len(rows)), labels, fontsize=7)
    axes.set_ylim(len(rows) - 0.5, -0.5)  # the first row (the baseline) on top, as in report.md
    axes.set_xlabel(metric)
    low = min(m - e for m, e in zip(means, errors, strict=True))
    high = max(m + e for m, e in zip(means, errors, strict=True))
    margin = 0.1 * (high - low + 1e-9)
    axes.set_xlim(low - margin, high + margin)
    axes.set_title(wrap(f"{metric} per configuration (mean ± 95 % CI)", TITLE_WIDTH, True))
    widen_for_ticks(figure, axes)
    return fit_contents(figure)


def curves_figure(rows: list[ConfigRow], metric: str = "val/loss") -> Figure | None:
    """Mean per-epoch curve of `metric` per configuration, from the runs' histories.

    The baseline and the configurations ending best are named (MAX_LEGEND in all); the others
    are grey.
    """
    curves: list[tuple[ConfigRow, list[int], list[float]]] = []
    for row in rows:
        per_epoch: dict[int, list[float]] = defaultdict(list)
        for job in row.jobs:
            for entry in job.history:
                if metric in entry:
                    per_epoch[int(entry["epoch"])].append(entry[metric])
        if per_epoch:
            epochs = sorted(per_epoch)
            curves.append((row, epochs, [float(np.mean(per_epoch[e])) for e in epochs]))
    if not curves:
        return None
    upward = metric.rsplit("/", 1)[-1] in IMPROVES_UPWARD

    def rank(i: int) -> tuple[bool, float]:  # the baseline first, then the best final values
        row, _, values = curves[i]
        return (not row.is_baseline, -values[-1] if upward else values[-1])

    ranked = sorted(range(len(curves)), key=rank)
    names = label_at_most([row_label(row) for row, _, _ in curves], ranked[:MAX_LEGEND])
    figure, axes = new_figure()
    for (_, epochs, values), name in zip(curves, names, strict=True):
        style = {"label": name} if name else {"color": OTHERS_COLOR, "linewidth": 0.8, "zorder": 1}
        axes.plot(epochs, values, **style)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 0.5 of one
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"mean {metric}")
    axes.set_title(wrap(f"mean {metric} per configuration", TITLE_WIDTH, True))
    legend_beside(figure, axes, others=names.count(None))
    return fit_contents(figure)


def plot_strength(rows: list[ConfigRow], metric: str, path: Path) -> Path | None:
    """`strength_figure` saved to `path` (None if there are no strengths)."""
    figure = strength_figure(rows, metric)
    return save(figure, path) if figure is not None else None


def plot_bars(rows: list[ConfigRow], metric: str, path: Path) -> Path | None:
    """`bars_figure` saved to `path` (None if no configuration logged `metric`)."""
    figure = bars_figure(rows, metric)
    return save(figure, path) if figure is not None else None


def plot_curves(rows: list[ConfigRow], path: Path, metric: str = "val/loss") -> Path | None:
    """`curves_figure` saved to `path` (None without histories)."""
    figure = curves_figure(rows, metric)
    return save(figure, path) if figure is not None else None
