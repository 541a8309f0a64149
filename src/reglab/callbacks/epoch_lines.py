"""Progress as one line per epoch, for output that is not a terminal (a log file, a batch job's
stdout); `reglab.run` uses it in place of the progress bar when stdout is not a terminal.

It does not change training. After every training epoch it logs, through the `reglab` logger
(so train.log has it too), the epoch number, its loss and the main validation metrics, and the
seconds the epoch took. A terminal keeps Lightning's live progress bar (`EpochBar`). The fraction
of exact zeros (`reg/zero_fraction`) is shown only where a penalty with an active L1 part can make
zeros (l1, elastic_net with l1_ratio > 0, proximal steps); elsewhere it is 0 and says nothing.
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from typing_extensions import override

from reglab import log
from reglab.callbacks.history import epoch_number
from reglab.callbacks.weight_penalty import WeightPenalty

# The metrics a line shows, in this order, when logged.
SHOWN = ("train/loss", "val/loss", "val/acc", "val/mse", "val/r2", "reg/zero_fraction")


def makes_zeros(trainer: L.Trainer) -> bool:
    """Whether a weight penalty with an L1 part acts (strength > 0): only it makes exact zeros."""
    return any(
        isinstance(callback, WeightPenalty)
        and callback.penalty.has_l1_part
        and callback.penalizes()
        for callback in trainer.callbacks
    )


# Metrics shown only where they can say something: name -> whether they do in this run.
SHOWN_WHEN = {"reg/zero_fraction": makes_zeros}


class EpochLines(ProgressBar):
    """A progress "bar" that writes one line per finished epoch."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._finished: int | None = None  # an epoch whose line waits for its train metrics
        self._started = 0.0

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_finished(trainer)
        self._started = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning publishes the epoch's train metrics after this hook: the line is written at
        # the next epoch's start or at the end of training.
        self._finished = epoch_number(trainer)
        self._seconds = time.perf_counter() - self._started

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_finished(trainer)

    def _write_finished(self, trainer: L.Trainer) -> None:
        if self._finished is None or not self._enabled:
            return
        metrics = trainer.callback_metrics
        shown = [name for name in SHOWN if name in metrics]
        shown = [name for name in shown if SHOWN_WHEN.get(name, lambda _: True)(trainer)]
        values = "  ".join(f"{name} {float(metrics[name]):.4f}" for name in shown)
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info(f"epoch {self._finished}/{total}  {values}  ({self._seconds:.1f}s)")
        self._finished = None
