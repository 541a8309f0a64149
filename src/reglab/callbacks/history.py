"""Records every epoch's logged metrics (train and val) for `metrics.json`; driven by `callbacks`.

It does not change training. Lightning publishes an epoch's train metrics only after every
`on_train_epoch_end` hook has run, so the snapshot of epoch k is taken when epoch k+1 starts, and
the last one when training ends (whether max_epochs or early stopping ended it).
"""

from __future__ import annotations

from typing import Any

import lightning as L


class EpochHistory(L.Callback):
    """Keeps one dict of scalar metrics per finished epoch in `self.epochs`."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._finished_epoch: int | None = None  # ended, not yet recorded

    def _snapshot(self, trainer: L.Trainer) -> None:
        epoch, self._finished_epoch = self._finished_epoch, None
        if epoch is None:
            return
        row: dict[str, float] = {"epoch": epoch}
        for name, value in trainer.callback_metrics.items():
            if getattr(value, "numel", lambda: 1)() == 1:
                row[name] = float(value)
        self.epochs.append(row)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remember which epoch just ended; its metrics are published after this hook."""
        self._finished_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Snapshot the previous epoch, whose metrics are now final."""
        self._snapshot(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Snapshot the last epoch."""
        self._snapshot(trainer)

    def frozen(self) -> EpochHistory:
        """A copy that later checkpoint restores (e.g. by `Trainer.test`) leave alone."""
        copy = EpochHistory()
        copy.epochs = [dict(row) for row in self.epochs]
        return copy

    def best(self, monitor: str, mode: str) -> dict[str, float] | None:
        """The epoch with the best `monitor` value (first one on ties), or None if never logged."""
        rows = [row for row in self.epochs if monitor in row]
        if not rows:
            return None
        pick = min if mode == "min" else max
        return pick(rows, key=lambda row: row[monitor])

    def state_dict(self) -> dict[str, Any]:
        """Resume keeps the history of the epochs before the checkpoint."""
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history saved in a checkpoint."""
        self.epochs = list(state_dict["epochs"])
