"""Logging filters of the run's console and train.log (conf/hydra/default.yaml's job logging).

Kept apart from reglab.log, which imports lightning_utilities: Hydra loads these filters for
every command, `--help` and config typos included, and those should answer fast.
"""

from __future__ import annotations

import logging

DETAIL_LOGGER = "reglab.detail"  # reglab.log.detail: train.log only
KNOWN_NOISE_LOGS = ("💡 Tip:", "litlogger")  # Lightning's advertisement at Trainer start


# Loggers whose messages the console shows: reglab's own, and Optuna's line per search trial.
CONSOLE_LOGGERS = ("reglab", "optuna")


class ConsoleFilter(logging.Filter):
    """The console shows reglab's lines, Optuna's and any warning; the rest (Lightning's notices)
    goes to train.log only."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep reglab's own messages (not the details), Optuna's and warnings."""
        shown = any(record.name == n or record.name.startswith(f"{n}.") for n in CONSOLE_LOGGERS)
        return (shown and record.name != DETAIL_LOGGER) or record.levelno >= logging.WARNING


class NoiseFilter(logging.Filter):
    """Drops Lightning's advertisement from the console and from train.log."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the known noise."""
        message = str(record.msg)
        return not any(noise in message for noise in KNOWN_NOISE_LOGS)
