"""Extra report plots for an Optuna study folder: optimization history and parameter importances.

The history names the optimized metric and shows pruned trials too; importances from fewer than
MIN_IMPORTANCE_TRIALS complete trials carry a warning (in the plot and in report.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reglab.report.layout import TITLE_WIDTH, fit_contents, new_figure, save, widen_for_ticks, wrap

# Below this many complete trials fANOVA's importances are noise: the plot and report.md say so.
MIN_IMPORTANCE_TRIALS = 10
# The study attribute where a reglab search keeps its fixed config (reglab.search's
# FIXED_CONFIG_ATTR; not imported: reglab.search pulls in Lightning).
FIXED_CONFIG_ATTR = "reglab_fixed_config"


@dataclass
class StudyInfo:
    """What report.md says about a search folder's study."""

    name: str
    metric: str  # what the study optimizes (optimized_metric), "objective" if unknown
    direction: str  # minimize | maximize
    states: dict[str, int]  # trials per state: complete, pruned, fail, running, waiting

    @property
    def title(self) -> str:
        """`Search report: penalty_search (best/val/loss, minimized)`."""
        return f"Search report: {self.name} ({self.metric}, {self.direction}d)"

    def notes(self) -> list[str]:
        """Trials by state and, below MIN_IMPORTANCE_TRIALS complete ones, a warning."""
        counts = ", ".join(f"{n} {state}" for state, n in self.states.items() if n)
        lines = [f"Study `{self.name}`: {counts} trials (the table lists those with a folder)."]
        complete = self.states.get("complete", 0)
        if 1 < complete < MIN_IMPORTANCE_TRIALS:
            lines.append(importance_warning(complete) + ".")
        return lines


def importance_warning(complete: int) -> str:
    """The warning of an importance estimate from too few complete trials."""
    return (
        f"Parameter importances from {complete} complete trials: unreliable "
        f"(fANOVA needs {MIN_IMPORTANCE_TRIALS} or more)"
    )


def _studies(folder: Path) -> list[Any]:
    """The study (studies, for a database of several) of a search folder; [] if none."""
    storage, name = study_storage(folder)
    if storage is None:
        return []
    import optuna

    summaries = optuna.get_all_study_summaries(storage)
    return [
        optuna.load_study(study_name=summary.study_name, storage=storage)
        for summary in summaries
        if name is None or summary.study_name == name  # a shared database holds others too
    ]


def study_metric(study: Any, folder: Path) -> str:
    """The metric the study optimizes: its recorded fixed config's `optimized_metric`, else a
    trial folder's config's; "objective" if neither says."""
    fixed = study.user_attrs.get(FIXED_CONFIG_ATTR) or {}
    if isinstance(fixed, dict) and fixed.get("optimized_metric"):
        return str(fixed["optimized_metric"])
    for config in sorted(folder.glob("trial_*/.hydra/config.yaml")):
        metric = (yaml.safe_load(config.read_text()) or {}).get("optimized_metric")
        if metric:
            return str(metric)
    return "objective"


def describe_study(folder: Path) -> StudyInfo | None:
    """Name, metric, direction and trial counts of the search folder's study; None without one
    (or with several in one database: each is plotted, none titles the report)."""
    studies = _studies(folder)
    if len(studies) != 1:
        return None
    (study,) = studies
    states: dict[str, int] = {}
    for trial in study.trials:
        state = trial.state.name.lower()
        states[state] = states.get(state, 0) + 1
    direction = study.direction.name.lower()
    return StudyInfo(study.study_name, study_metric(study, folder), direction, states)


def plot_study(folder: Path) -> list[Path]:
    """Plots for the study of a search folder (`hparams_search`); nothing if there is none."""
    import optuna

    written = []
    for study in _studies(folder):
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            continue
        metric = study_metric(study, folder)
        history = history_figure(study, complete, metric)
        written.append(save(history, folder / "report_optuna_history.png"))
        if len(complete) > 1 and len({tuple(sorted(t.params.items())) for t in complete}) > 1:
            importances = optuna.importance.get_param_importances(study)
            figure = importances_figure(importances, len(complete))
            written.append(save(figure, folder / "report_optuna_importances.png"))
    return written


def study_storage(folder: Path) -> tuple[str | None, str | None]:
    """Where a search folder's study lives: its study.db (every study in it), or the shared
    storage and study name its best.yaml records (a PostgreSQL study); (None, None) if neither."""
    database = folder / "study.db"
    if database.is_file():
        return f"sqlite:///{database.resolve()}", None
    best = folder / "best.yaml"
    record = (yaml.safe_load(best.read_text()) or {}) if best.is_file() else {}
    if record.get("storage"):
        return record["storage"], record.get("study")
    return None, None


def history_figure(study: Any, complete: list[Any], metric: str = "objective") -> Figure:
    """Each trial's value of `metric` and the best so far, against the (whole) trial number.

    Pruned trials are drawn too, at the last value they reported (an earlier epoch's, so not
    comparable with a finished trial's: a grey cross, not a point of the best-so-far line).
    """
    import optuna

    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    best, running = [], None
    for value in values:
        running = value if running is None else (min if minimize else max)(running, value)
        best.append(running)
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in study.trials
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values
    ]
    figure, axes = new_figure()
    axes.scatter(numbers, values, label="complete trial", s=14, zorder=3)
    if pruned:
        x, y = zip(*pruned, strict=True)
        axes.scatter(
            x, y, marker="x", color="0.5", s=20, label="pruned (last value reported)", zorder=2
        )
    axes.step(numbers, best, where="post", color="tab:red", label="best so far", zorder=4)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial 3, not 3.25
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{metric} ({study.direction.name.lower()}d)")
    axes.set_title(wrap(f"optimization history: {study.study_name}", TITLE_WIDTH, True))
    axes.legend(fontsize=8)  # a few entries, placed where they hide the fewest points
    return fit_contents(figure)


def importances_figure(importances: dict[str, float], complete: int | None = None) -> Figure:
    """One horizontal bar per searched parameter, the most important on top; with fewer than
    MIN_IMPORTANCE_TRIALS `complete` trials, a warning above it."""
    names = list(importances)[::-1]
    figure, axes = new_figure(4.0, 0.4 * len(names) + 1.5)
    axes.barh(range(len(names)), [importances[n] for n in names], color="tab:green")
    axes.set_yticks(range(len(names)), names)  # whole: the names the search space gives
    axes.set_xlim(left=0)
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("parameter importances")
    if complete is not None and complete < MIN_IMPORTANCE_TRIALS:
        warning = wrap(f"⚠ {importance_warning(complete)}", TITLE_WIDTH)
        figure.suptitle(warning, color="tab:red", fontsize=8)
    widen_for_ticks(figure, axes)
    return fit_contents(figure)
