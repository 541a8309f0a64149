"""The run's messages: one Python logger, written by rank zero only.

Under `python train.py` Hydra's job logging (conf/hydra/default.yaml) sends these messages to the
console and to the run folder's `train.log`; in a library call they follow the caller's logging.
"""

from __future__ import annotations

import logging
import os

from lightning_utilities.core.rank_zero import rank_zero_only

logger = logging.getLogger("reglab")

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


def route_lightning_logs() -> None:
    """Once logging is configured (Hydra's job logging), Lightning's messages go through it alone.

    Lightning gives its `lightning` logger a console handler of its own when imported; messages
    would then be printed twice and only one copy would reach train.log.
    """
    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
