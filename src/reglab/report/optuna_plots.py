"""Extra report plots for an Optuna study folder: optimization history and parameter importances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


def plot_study(folder: Path) -> list[Path]:
    """Plots for `folder/study.db` (written by `hparams_search`); nothing if there is no study."""
    database = folder / "study.db"
    if not database.is_file():
        return []
    import optuna

    storage = f"sqlite:///{database.resolve()}"
    written = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            continue
        written.append(_history(study, complete, folder / "report_optuna_history.png"))
        if len(complete) > 1 and len({tuple(sorted(t.params.items())) for t in complete}) > 1:
            importances = optuna.importance.get_param_importances(study)
            written.append(_importances(importances, folder / "report_optuna_importances.png"))
    return written


def _history(study: Any, complete: list[Any], path: Path) -> Path:
    import optuna

    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    best, running = [], None
    for value in values:
        running = value if running is None else (min if minimize else max)(running, value)
        best.append(running)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter(numbers, values, label="trial", s=14)
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel("objective")
    axes.set_title(f"optimization history: {study.study_name}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _importances(importances: dict[str, float], path: Path) -> Path:
    names = list(importances)[::-1]
    figure, axes = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    axes.barh(names, [importances[n] for n in names], color="tab:green")
    axes.set_xlabel("importance (fANOVA)")
    axes.set_title("parameter importances")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
