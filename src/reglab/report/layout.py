"""Figure layout for the report plots: short labels, a legend beside the axes, nothing clipped.

Labels of a sweep's configurations (and of an Optuna study's trials) can be hundreds of
characters long. They are shortened (`short_label`) and wrapped; every plot is laid out with
matplotlib's constrained layout; a legend or long tick labels widen the figure instead of
squeezing the axes, `fit_contents` enlarges a figure until everything drawn lies inside it, and
`save` crops to what was drawn, so no text is cut off at the edge.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# Labelled entries in a legend; further lines are drawn in grey under one "others" entry.
MAX_LEGEND = 10
# Characters per line of a legend entry or a tick label (longer labels are wrapped at ", ").
LABEL_WIDTH = 48
# Characters per title line; a longer name (a study's) is broken, not widened to fit.
TITLE_WIDTH = 60
# Values longer than this that read as numbers are shown with SIGNIFICANT digits (as the search's
# console lines show them).
SHORT_VALUE = 6
SIGNIFICANT = 4
DPI = 120
OTHERS_COLOR = "0.75"


def new_figure(width: float = 6.0, height: float = 4.0) -> tuple[Figure, Axes]:
    """A figure with one axes under constrained layout (decorations get room, not the edge)."""
    return plt.subplots(figsize=(width, height), layout="constrained")


def new_panels(count: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure of `count` axes one above the other, sharing both axes, constrained layout."""
    figure, grid = plt.subplots(
        count, 1, sharex=True, sharey=True, layout="constrained", figsize=(width, height),
        squeeze=False,
    )  # fmt: skip
    return figure, list(grid[:, 0])


def short_value(value: str) -> str:
    """`0.012350696577481468` -> `0.01235`: an Optuna trial's float, not every digit of it."""
    if len(value) <= SHORT_VALUE:
        return value
    try:
        return f"{float(value):.{SIGNIFICANT}g}"
    except ValueError:
        return value


def short_label(pairs: Iterable[tuple[str, str]]) -> str:
    """`k=v, k=v` with each key cut to its last part where that stays unambiguous, wrapped.

    `regularization.strength=1.9517224641449486e-06` becomes `strength=1.952e-06`; a key whose
    last part another key shares (`dropout` and `model.dropout`) is kept whole.
    """
    pairs = list(pairs)
    last = [key.rsplit(".", 1)[-1] for key, _ in pairs]
    parts = [
        f"{tail if last.count(tail) == 1 else key}={short_value(str(value))}"
        for (key, value), tail in zip(pairs, last, strict=True)
    ]
    return wrap(", ".join(parts)) or "default"


def wrap(text: str, width: int = LABEL_WIDTH, break_long_words: bool = False) -> str:
    """`text` in lines of about `width` characters, broken at spaces (and inside longer words
    only with `break_long_words`)."""
    lines = textwrap.wrap(text, width, break_long_words=break_long_words, break_on_hyphens=False)
    return "\n".join(lines)


def legend_beside(figure: Figure, axes: Axes, others: int = 0) -> Legend | None:
    """The axes' legend to the right of the axes, the figure widened by the legend's width.

    The caller labels at most MAX_LEGEND lines and draws the `others` in OTHERS_COLOR; they get
    one entry, last.
    """
    handles, labels = axes.get_legend_handles_labels()
    if others:
        handles.append(Line2D([], [], color=OTHERS_COLOR))
        labels.append(f"{others} others (see report.md)")
    if not handles:
        return None
    legend = axes.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7
    )
    size = legend.get_window_extent(figure.canvas.get_renderer())
    width, height = size.width / figure.dpi, size.height / figure.dpi
    figure.set_size_inches(
        figure.get_figwidth() + width + 0.2, max(figure.get_figheight(), height + 0.8)
    )
    return legend


def widen_for_ticks(figure: Figure, axes: Axes) -> None:
    """Widen the figure by the width of the longest y tick label (bar names on the left)."""
    renderer = figure.canvas.get_renderer()
    widths = [t.get_window_extent(renderer).width for t in axes.get_yticklabels() if t.get_text()]
    if widths:
        figure.set_figwidth(figure.get_figwidth() + max(widths) / figure.dpi)


def label_at_most(labels: Sequence[str], keep: Sequence[int]) -> list[str | None]:
    """`labels` with only the positions in `keep` named (None: drawn as one of the others)."""
    kept = set(keep)
    return [label if i in kept else None for i, label in enumerate(labels)]


def fit_contents(figure: Figure, tries: int = 3) -> Figure:
    """Enlarge `figure` until everything drawn lies inside it (a wide title, a tall legend).

    Constrained layout keeps decorations inside the figure but centres a title on its axes, so a
    title wider than the axes overhangs both sides; enlarging the figure widens the axes.
    """
    for _ in range(tries):
        figure.draw_without_rendering()  # runs the layout
        drawn = figure.get_tightbbox(figure.canvas.get_renderer())  # inches
        width, height = figure.get_size_inches()
        wide = max(0.0, -drawn.x0, drawn.x1 - width)
        tall = max(0.0, -drawn.y0, drawn.y1 - height)
        if wide <= 0.01 and tall <= 0.01:
            break
        figure.set_size_inches(width + 2 * wide + 0.1, height + 2 * tall + 0.1)
    return figure


def save(figure: Figure, path: Path) -> Path:
    """Write `figure` as a PNG, cropped to everything drawn (nothing cut at the edge), and close."""
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return path
