"""Report plots (matplotlib, Agg): metric vs strength, configuration bars, val-loss curves.

Error bars are the 95 % confidence interval of the mean, as in report.md, clipped to the metric's
range (an accuracy's within [0, 1]); a plot of configurations with fewer than SMALL_N runs says so
above it. Bar axes start at zero; learning curves show each configuration's spread over its runs
and draw the baseline on top. Each plot has a
`*_figure` function that draws it (tested for its layout) and a `plot_*` function that saves it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

import reglab.tasks  # noqa: F401 - registers the built-in tasks, which declare their metrics
from reglab.metric_directions import improves_toward
from reglab.report.intervals import bounds, small_n_warning
from reglab.report.layout import (
    MAX_LEGEND,
    OTHERS_COLOR,
    TITLE_WIDTH,
    fit_contents,
    label_at_most,
    legend_beside,
    new_figure,
    new_panels,
    save,
    short_label,
    widen_for_ticks,
    wrap,
)
from reglab.report.sections import is_search
from reglab.report.table import ConfigRow

STRENGTH = "regularization.strength"
# Lines of the strength plot are set this many decades apart, their error bars side by side.
DODGE = 0.015
METHOD = "regularization"


def row_label(row: ConfigRow, leave_out: tuple[str, ...] = ()) -> str:
    """The short, wrapped label of a configuration (its differing overrides); a search's trial
    starts with its number (`trial 3: dropout=0.3353, ...`), as in report.md."""
    label = short_label((k, v) for k, v in row.key if k in row.shown and k not in leave_out)
    return label if row.trial is None else f"trial {row.trial}: {label}"


def _errors(rows: list[ConfigRow], metric: str) -> np.ndarray:
    """(2, n) below/above each row's mean: its 95 % CI clipped to the metric's range (0 for one run)."""
    below, above = [], []
    for row in rows:
        mean, (low, high) = row.mean(metric), row.interval(metric)
        below.append(0.0 if math.isnan(low) else mean - low)
        above.append(0.0 if math.isnan(high) else high - mean)
    return np.array([below, above])


def _spread_note(rows: list[ConfigRow], metric: str) -> str:
    # What the error bars are; nothing where each configuration is one run (a search's trials).
    return " (mean ± 95 % CI)" if any(row.n(metric) > 1 for row in rows) else " (one run each)"


def warn_small_n(
    figure: Figure, rows: list[ConfigRow], counts: list[int], curves: bool = False
) -> str | None:
    """A red line above the plot where a configuration has fewer than SMALL_N runs; its text.

    Not for a search: one run per trial is how it works (its titles say "one run each").
    """
    warning = None if is_search(rows) else small_n_warning(counts)
    if warning is None:
        return None
    if curves:  # the band is the runs' min–max, not a CI
        n = min(c for c in counts if c > 0)
        warning = f"n = {n} run{'s' * (n > 1)} per configuration: " + (
            "no band" if n == 1 else "the band is a narrow sample of the spread"
        )
    figure.suptitle(f"⚠ {warning}", color="tab:red", fontsize=8)
    return warning


def _noun(rows: list[ConfigRow]) -> str:
    return "trial" if is_search(rows) else "configuration"


def clamp_to_range(axes: Axes, metric: str, axis: str = "y") -> None:
    """Keep a bounded metric's axis within its range (and a little margin for the markers)."""
    floor, ceiling = bounds(metric)
    low, high = axes.get_ylim() if axis == "y" else axes.get_xlim()
    pad = 0.02 * (ceiling - floor) if math.isfinite(ceiling - floor) else 0.0
    low = max(low, floor - pad) if math.isfinite(floor) else low
    high = min(high, ceiling + pad) if math.isfinite(ceiling) else high
    (axes.set_ylim if axis == "y" else axes.set_xlim)(low, high)


def strength_figure(rows: list[ConfigRow], metric: str) -> Figure | None:
    """Metric against strength, log x, one line per setting of the other overrides.

    Where no setting has two strengths (an Optuna study: every trial its own configuration)
    there is nothing to connect: the configurations are one scatter. None if no strengths.
    Error bars are 95 % CIs clipped to the metric's range; the baseline is a dashed line in its
    CI band.
    """
    lines: dict[str, list[ConfigRow]] = defaultdict(list)
    for row in rows:
        if STRENGTH in dict(row.key) and row.n(metric):
            lines[row_label(row, leave_out=(STRENGTH,))].append(row)
    if not lines:
        return None

    def strength(row: ConfigRow) -> float:
        return float(dict(row.key)[STRENGTH])

    figure, axes = new_figure()
    others = 0
    if max(len(points) for points in lines.values()) < 2:
        points = sorted(sum(lines.values(), []), key=strength)
        x, y = [strength(r) for r in points], [r.mean(metric) for r in points]
        axes.errorbar(
            x, y, yerr=_errors(points, metric), fmt="o", capsize=3, label=f"{_noun(rows)}s"
        )
        for row, at in zip(points, zip(x, y, strict=True), strict=True):
            if row.trial is not None:  # which trial each point is, as in report.md
                axes.annotate(
                    str(row.trial), at, xytext=(4, 3), textcoords="offset points", fontsize=7
                )
    else:
        # The settings with the most strengths get a colour and a name; the rest are grey.
        order = sorted(lines, key=lambda label: (-len(lines[label]), label))
        names = label_at_most(order, range(MAX_LEGEND))
        for i, (label, name) in enumerate(zip(order, names, strict=True)):
            points = sorted(lines[label], key=strength)
            # Each line a little to the side (DODGE decades apart): error bars at one strength
            # would otherwise lie on top of each other.
            shift = 10 ** (DODGE * (i - (len(order) - 1) / 2)) if name else 1.0
            x, y = [strength(r) * shift for r in points], [r.mean(metric) for r in points]
            style = {"label": name} if name else {"color": OTHERS_COLOR, "zorder": 1}
            axes.errorbar(x, y, yerr=_errors(points, metric), marker="o", capsize=3, **style)
        others = names.count(None)
    baseline = next((r for r in rows if dict(r.key).get(METHOD) == "none" and r.n(metric)), None)
    if baseline is not None:
        axes.axhline(
            baseline.mean(metric),
            color="black",
            linestyle="--",
            label="regularization=none",
            zorder=5,
        )
        low, high = baseline.interval(metric)
        if not math.isnan(low) and high > low:
            axes.axhspan(low, high, color="black", alpha=0.08, zorder=0, linewidth=0)
    axes.set_xscale("log")
    axes.set_xlabel(STRENGTH)
    axes.set_ylabel(metric)
    clamp_to_range(axes, metric)
    axes.set_title(wrap(f"{metric} vs strength{_spread_note(rows, metric)}", TITLE_WIDTH, True))
    warn_small_n(figure, rows, [row.n(metric) for row in rows if row.n(metric)])
    legend_beside(figure, axes, others=others)
    return fit_contents(figure)


def bars_figure(rows: list[ConfigRow], metric: str) -> Figure | None:
    """One horizontal bar per configuration, top to bottom in report order: mean ± 95 % CI.

    Bars start at zero (the axis includes 0): a cut axis would make small differences look large.
    """
    rows = [row for row in rows if row.n(metric)]
    if not rows:
        return None
    labels = [row_label(row) for row in rows]
    lines = sum(label.count("\n") + 1 for label in labels)
    figure, axes = new_figure(4.0, max(2.5, 0.16 * lines + 0.3 * len(rows) + 1.0))
    means = np.array([row.mean(metric) for row in rows])
    errors = _errors(rows, metric)
    colors = ["grey" if row.is_baseline else "tab:blue" for row in rows]
    axes.barh(range(len(rows)), means, color=colors)
    spread = [i for i, row in enumerate(rows) if row.n(metric) > 1]  # a single run has no bar
    if spread:
        axes.errorbar(
            means[spread], spread, xerr=errors[:, spread], fmt="none", ecolor="black", capsize=3
        )
    axes.set_yticks(range(len(rows)), labels, fontsize=7)
    axes.set_ylim(len(rows) - 0.5, -0.5)  # the first row (the baseline) on top, as in report.md
    axes.set_xlabel(metric)
    low, high = (
        min(0.0, float(np.min(means - errors[0]))),
        max(0.0, float(np.max(means + errors[1]))),
    )
    margin = 0.05 * (high - low + 1e-9)
    axes.set_xlim(low - margin if low < 0 else 0.0, high + margin if high > 0 else 0.0)
    clamp_to_range(axes, metric, axis="x")
    axes.set_title(
        wrap(f"{metric} per {_noun(rows)}{_spread_note(rows, metric)}", TITLE_WIDTH, True)
    )
    warn_small_n(figure, rows, [row.n(metric) for row in rows])
    widen_for_ticks(figure, axes)
    return fit_contents(figure)


# The baseline's curve: on top of the others, black and dashed.
BASELINE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.8, "zorder": 10}


Curve = tuple[ConfigRow, list[int], np.ndarray]  # a row, its epochs, per epoch mean/min/max


def _curves(rows: list[ConfigRow], metric: str) -> list[Curve]:
    curves = []
    for row in rows:
        per_epoch: dict[int, list[float]] = defaultdict(list)
        for job in row.jobs:
            for entry in job.history:
                if metric in entry:
                    per_epoch[int(entry["epoch"])].append(entry[metric])
        if per_epoch:
            epochs = sorted(per_epoch)
            stats = [(np.mean(per_epoch[e]), min(per_epoch[e]), max(per_epoch[e])) for e in epochs]
            curves.append((row, epochs, np.array(stats, dtype=float).T))
    return curves


def _panels(curves: list[Curve]) -> dict[str, list[Curve]]:
    """The curves per penalty method, the baseline in each, where two methods or more were
    swept (ten curves in one axes hide each other); else all in one panel, keyed ''."""
    methods = {dict(row.key).get(METHOD) for row, _, _ in curves if not row.is_baseline}
    shown = curves[0][0].shown
    if METHOD not in shown or len(methods) < 2 or None in methods:
        return {"": curves}
    baseline = [curve for curve in curves if curve[0].is_baseline]
    return {
        method: baseline + [c for c in curves if dict(c[0].key).get(METHOD) == method]
        for method in sorted(methods, key=str)
    }


def _draw_curves(axes: Axes, curves: list[Curve], metric: str, leave_out: tuple[str, ...]) -> int:
    """Lines and min–max bands of `curves`; the baseline on top. Returns how many went grey."""
    upward = improves_toward(metric) == "max"

    def rank(i: int) -> tuple[bool, float]:  # the baseline first, then the best final values
        row, _, values = curves[i]
        return (not row.is_baseline, -values[0][-1] if upward else values[0][-1])

    labels = [row_label(row, () if row.is_baseline else leave_out) for row, _, _ in curves]
    names = label_at_most(labels, sorted(range(len(curves)), key=rank)[:MAX_LEGEND])
    for (row, epochs, (mean, low, high)), name in zip(curves, names, strict=True):
        if name is None:
            axes.plot(epochs, mean, color=OTHERS_COLOR, linewidth=0.8, zorder=1)
            continue
        style = BASELINE_STYLE if row.is_baseline else {"zorder": 3}
        (line,) = axes.plot(epochs, mean, label=name, **style)
        if np.any(high > low):  # two runs or more
            band = line.get_zorder() - 1
            axes.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15, zorder=band)
    return names.count(None)


def _log_if_wide(axes: Axes, curves: list[Curve], metric: str) -> None:
    # A loss from 2.3 down to 0.1 squeezes the curves that matter into the bottom tenth.
    means = np.concatenate([values[0] for _, _, values in curves])
    if bounds(metric)[0] == 0 and means.min() > 0 and means.max() > 10 * means.min():
        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.1 0.2 0.5 1 2
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())


def curves_figure(rows: list[ConfigRow], metric: str = "val/loss") -> Figure | None:
    """Per-epoch curve of `metric` per configuration: the mean over its runs, in a band from
    their lowest to their highest value, epochs as the runs' histories record them.

    The baseline (black, dashed) is drawn on top. It and the configurations ending best are
    named (MAX_LEGEND in all); the others are grey lines without a band. A sweep of several
    penalty methods gets one panel per method, each with the baseline.
    """
    curves = _curves(rows, metric)
    if not curves:
        return None
    title = f"{metric} per {_noun(rows)}: mean over runs, band min–max"
    counts = [sum(bool(job.history) for job in row.jobs) for row, _, _ in curves]
    panels = _panels(curves)
    if len(panels) == 1:
        figure, axes = new_figure()
        others = _draw_curves(axes, curves, metric, ())
        axes.set_title(wrap(title, TITLE_WIDTH, True))
        grid = [axes]
    else:
        figure, grid = new_panels(len(panels), 6.0, 1.8 * len(panels) + 0.8)
        for axes, (method, group) in zip(grid, panels.items(), strict=True):
            _draw_curves(axes, group, metric, (METHOD,))
            axes.set_title(f"{METHOD}={method}", fontsize=9)
            axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=7)
        grid[0].set_title(wrap(title, TITLE_WIDTH, True) + f"\n{METHOD}={next(iter(panels))}")
    for axes in grid:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 0.5 of one
        axes.set_ylabel(metric)
    grid[-1].set_xlabel("epoch")
    _log_if_wide(grid[0], curves, metric)
    warn_small_n(figure, [row for row, _, _ in curves], counts, curves=True)
    if len(panels) == 1:
        legend_beside(figure, grid[0], others=others)
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
