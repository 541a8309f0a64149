"""The run's messages: one Python logger, written by rank zero only.

Under `python train.py` Hydra's job logging (conf/hydra/default.yaml) sends these messages to the
console and to the run folder's `train.log`; in a library call they follow the caller's logging.
"""

from __future__ import annotations

import logging
import os
import warnings

from lightning_utilities.core.rank_zero import rank_zero_only

from reglab.log_filters import DETAIL_LOGGER

logger = logging.getLogger("reglab")
# Details (every module's mode, ...): train.log only (conf/hydra/default.yaml), not the console.
detail_logger = logging.getLogger(DETAIL_LOGGER)

# Third-party messages that tell a reglab user nothing, silenced where they arise (by message).
KNOWN_NOISE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree use, torch >= 2.9
    r".*does not have many workers",  # in-memory loaders need none
    r".*Checkpoint directory .* exists and is not empty",  # a resume into its own run folder
    r".*smaller than the logging interval",  # metrics are per epoch; step logging is opt-in
)

# Lightning sets the rank when it is imported; a process that never imports it (the parent of a
# joblib or submitit sweep) reads it from the environment as Lightning does.
if not hasattr(rank_zero_only, "rank"):
    rank_zero_only.rank = next(
        (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if k in os.environ), 0
    )


@rank_zero_only
def info(message: str) -> None:
    """Log `message` at INFO from rank zero."""
    logger.info(message)


@rank_zero_only
def warning(message: str) -> None:
    """Log `message` as a warning from rank zero."""
    logger.warning(message)


@rank_zero_only
def detail(message: str) -> None:
    """Log `message` for the run's train.log only (the console shows reglab's own lines)."""
    detail_logger.info(message)


# Whether the run now going is one of many (a sweep's job, a search's trial): set by reglab.run.
_one_of_many = False


def set_one_of_many(one_of_many: bool) -> None:
    """Say whether the run now starting is one of many, whose console holds a line per run."""
    global _one_of_many
    _one_of_many = one_of_many


def run_info(message: str) -> None:
    """A line about this run: the console and train.log of a single run; for one of many (a
    sweep's job, a search's trial), train.log only."""
    (detail if _one_of_many else info)(message)


# Libraries' loggers that may carry a console handler of their own (see route_library_logs):
# Lightning's, and Optuna's (a line per search trial).
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "optuna")


def silence_known_noise() -> None:
    """Ignore the third-party warnings listed in KNOWN_NOISE_WARNINGS (and nothing else)."""
    for pattern in KNOWN_NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def route_library_logs() -> None:
    """Once logging is configured (Hydra's job logging), Lightning's and Optuna's messages and
    Python's warnings go through it alone, known noise silenced.

    Lightning gives its `lightning` logger a console handler of its own when imported, and so
    do `lightning.pytorch` and `lightning.fabric` (not propagating) when they are imported before
    logging is configured, as in a joblib worker; Optuna's `optuna` logger always has one (not
    propagating). Messages would then be printed twice or bypass the console filter, and
    train.log would miss them.
    """
    logging.captureWarnings(True)  # warnings reach train.log too, through the same handlers
    silence_known_noise()
    if logging.getLogger().hasHandlers():
        for name in LIBRARY_LOGGERS:
            library_logger = logging.getLogger(name)
            for handler in list(library_logger.handlers):
                if type(handler) is logging.StreamHandler:
                    library_logger.removeHandler(handler)
            library_logger.propagate = True
