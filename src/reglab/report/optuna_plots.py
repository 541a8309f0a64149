"""Extra report plots for an Optuna study folder: optimization history and parameter importances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from reglab.report.layout import TITLE_WIDTH, fit_contents, new_figure, save, widen_for_ticks, wrap


def plot_study(folder: Path) -> list[Path]:
    """Plots for the study of a search folder (`hparams_search`); nothing if there is none."""
    storage, name = study_storage(folder)
    if storage is None:
        return []
    import optuna

    written = []
    for summary in optuna.get_all_study_summaries(storage):
        if name is not None and summary.study_name != name:
            continue  # a shared database holds other studies too
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            continue
        history = history_figure(study, complete)
        written.append(save(history, folder / "report_optuna_history.png"))
        if len(complete) > 1 and len({tuple(sorted(t.params.items())) for t in complete}) > 1:
            importances = optuna.importance.get_param_importances(study)
            figure = importances_figure(importances)
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


def history_figure(study: Any, complete: list[Any]) -> Figure:
    """Each completed trial's objective and the best so far, against the trial number."""
    import optuna

    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    best, running = [], None
    for value in values:
        running = value if running is None else (min if minimize else max)(running, value)
        best.append(running)
    figure, axes = new_figure()
    axes.scatter(numbers, values, label="trial", s=14)
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"objective ({study.direction.name.lower()}d)")
    axes.set_title(wrap(f"optimization history: {study.study_name}", TITLE_WIDTH, True))
    axes.legend(fontsize=8)  # two entries, placed where they hide the fewest points
    return fit_contents(figure)


def importances_figure(importances: dict[str, float]) -> Figure:
    """One horizontal bar per searched parameter, the most important on top."""
    names = list(importances)[::-1]
    figure, axes = new_figure(4.0, 0.4 * len(names) + 1.5)
    axes.barh(range(len(names)), [importances[n] for n in names], color="tab:green")
    axes.set_yticks(range(len(names)), names)  # whole: the names the search space gives
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("parameter importances")
    widen_for_ticks(figure, axes)
    return fit_contents(figure)
