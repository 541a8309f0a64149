"""A search's console: one reglab line per trial, in place of Optuna's own.

Optuna logs `Trial 0 finished with value: 0.886... and parameters: {'regularization.strength':
0.0001757746859548628}. Best is trial 0 with value: 0.886...` and, for a failed trial, a warning
with the traceback. Instead, a study callback prints

    reglab: trial 0: best/val/loss=0.8860 (regularization.strength=0.0001758); best so far trial 0

naming the metric and rounding values (a failed trial's traceback goes to train.log only).
Optuna's other warnings still show.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reglab import log

# Optuna's loggers of its line per trial: completed (study), pruned and failed (_optimize).
TRIAL_LOGGERS = ("optuna.study.study", "optuna.study._optimize")


class _OptunaTrialLines(logging.Filter):
    """Drops Optuna's `Trial N ...` records (the callback below says it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but a trial's line."""
        return not str(record.msg).startswith("Trial ")


@contextmanager
def reglab_trial_lines() -> Iterator[None]:
    """In the block, Optuna prints no line per trial (its other messages stay)."""
    dropped = _OptunaTrialLines()
    loggers = [logging.getLogger(name) for name in TRIAL_LOGGERS]
    for logger in loggers:
        logger.addFilter(dropped)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(dropped)


class TrialLines:
    """A study.optimize callback: a line per finished trial (complete, pruned or failed)."""

    def __init__(self, metric: str, folder: Path) -> None:
        self.metric, self.folder = metric, folder

    def __call__(self, study: Any, trial: Any) -> None:
        """Print the trial's line."""
        log.info(trial_line(study, trial, self.metric, self.folder))


def trial_line(study: Any, trial: Any, metric: str, folder: Path) -> str:
    """`reglab: trial N: <metric>=<value> (<params>); best so far trial K`."""
    state = trial.state.name
    if state == "COMPLETE":
        outcome = f"{metric}={number(trial.value)}"
    elif state == "PRUNED":
        epochs = len(trial.intermediate_values)
        outcome = f"pruned after {epochs} epoch{'' if epochs == 1 else 's'}"
    else:
        outcome = f"failed: {_error(folder, trial.number)}"
    params = ", ".join(f"{key}={number(value)}" for key, value in trial.params.items())
    return (
        f"reglab: trial {trial.number}: {outcome}"
        + (f" ({params})" if params else "")
        + (f"; {best_so_far(study, trial.number)}")
    )


def best_so_far(study: Any, number_now: int) -> str:
    """`best so far trial K` (with its value when it is not trial `number_now`)."""
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        return "no trial completed yet"
    if best.number == number_now:
        return f"best so far trial {best.number}"
    return f"best so far trial {best.number} ({number(best.value)})"


def number(value: Any) -> str:
    """A metric or parameter as read: a float in 4 decimals (0.8860), or in 4 significant digits
    where decimals would hide it (0.0001758, 1.235e+05); anything else as it is."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if 0.1 <= abs(value) < 1e4 else f"{value:.4g}"


def _error(folder: Path, trial_number: int) -> str:
    # The trial's metrics.json holds its error's first line (study._record).
    record = folder / f"trial_{trial_number:04d}" / "metrics.json"
    try:
        return json.loads(record.read_text()).get("error") or "see train.log"
    except (OSError, ValueError):
        return "see train.log"
