"""Lightning's live progress bar, with the epoch counted from 1 (`Epoch 1/20`); `reglab.run` uses
it when stdout is a terminal (off a terminal, `EpochLines` writes one line per epoch instead).

It does not change training. Lightning's own bar labels the first epoch `Epoch 0`, where the
per-epoch lines, metrics.json and the checkpoint names say `epoch 1`.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from typing_extensions import override

from reglab.callbacks.history import epoch_number


class EpochBar(TQDMProgressBar):
    """TQDMProgressBar whose training bar reads `Epoch <n>/<max_epochs>`, n counted from 1."""

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, *args: object) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(description(trainer))


def description(trainer: L.Trainer) -> str:
    """`Epoch 3/20`, or `Epoch 3` when training has no epoch limit."""
    total = trainer.max_epochs
    return f"Epoch {epoch_number(trainer)}" + (f"/{total}" if total and total > 0 else "")
