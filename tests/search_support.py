"""What the Optuna search tests share: a tiny search command and the study it writes (the
stand-in for training is conftest's `trials` fixture)."""

from __future__ import annotations

from pathlib import Path

import optuna

# Two random trials of one epoch on a small net, nothing printed or logged.
SEARCH = [
    "hparams_search=penalty_search",
    "hparams_search.sampler=random",
    "hparams_search.pruner=none",
    "hparams_search.n_trials=2",
    "trainer.max_epochs=1",
    "early_stopping=none",
    "model.width=16",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def folder_of(cwd: Path) -> Path:
    """The search folder of `penalty_search` run from `cwd`."""
    return cwd / "outputs" / "search" / "penalty_search"


def load(cwd: Path, storage: str | None = None) -> optuna.Study:
    """The study of `penalty_search` run from `cwd` (its SQLite file unless `storage`)."""
    url = storage or f"sqlite:///{folder_of(cwd) / 'study.db'}"
    return optuna.load_study(study_name="penalty_search", storage=url)


def study_with_a_killed_trial(cwd: Path) -> tuple[optuna.Study, optuna.Trial]:
    """A new SQLite study of `penalty_search` under `cwd` holding one trial asked and never told:
    what a SIGKILLed worker leaves behind."""
    folder = folder_of(cwd)
    folder.mkdir(parents=True)
    study = optuna.create_study(
        study_name="penalty_search", storage=f"sqlite:///{folder / 'study.db'}"
    )
    return study, study.ask()
