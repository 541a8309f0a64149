"""Lightning's live progress bar, with the epoch counted from 1 (`Epoch 1/20`); `reglab.run` uses
it when stdout is a terminal (off a terminal, `EpochLines` writes one line per epoch instead).

It does not change training. Lightning's own bars label the first epoch `Epoch 0` (its rich bar
`Epoch 0/19` of 20), where the per-epoch lines, metrics.json and the checkpoint names say
`epoch 1`. `epoch_bar()` picks the bar Lightning would: the rich one where `rich` is installed
(a reglab dependency), else the tqdm one.
"""

from __future__ import annotations

import importlib.util

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from typing_extensions import override

from reglab.callbacks.history import epoch_number


def description(trainer: L.Trainer) -> str:
    """`Epoch 3/20`, or `Epoch 3` when training has no epoch limit."""
    total = trainer.max_epochs
    return f"Epoch {epoch_number(trainer)}" + (f"/{total}" if total and total > 0 else "")


class TqdmEpochBar(TQDMProgressBar):
    """TQDMProgressBar whose training bar reads `Epoch <n>/<max_epochs>`, n counted from 1."""

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, *args: object) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(description(trainer))


class RichEpochBar(RichProgressBar):
    """RichProgressBar whose training bar reads `Epoch <n>/<max_epochs>`, n counted from 1."""

    # Lightning builds the training bar's text in this one method, at every epoch start.
    @override
    def _get_train_description(self, current_epoch: int) -> str:
        text = description(self.trainer)
        # As Lightning's: padded to the validation bar's text, so the bar does not jump.
        return f"{text:{len(self.validation_description)}}"


def epoch_bar() -> ProgressBar:
    """The progress bar Lightning would use (rich if installed, else tqdm), counting from 1."""
    return RichEpochBar() if importlib.util.find_spec("rich") else TqdmEpochBar()
