"""Records every epoch's logged metrics (train and val) for `metrics.json`; driven by `callbacks`.

It does not change training. Validation metrics are taken when validation ends; Lightning
publishes an epoch's train metrics only after every `on_train_epoch_end` hook, so they are merged
in when the next epoch starts or training ends. A checkpoint written at the end of a training
epoch (last.ckpt) gets that epoch's train metrics from the module (`epoch_metrics`), so a run
resumed from it has the same history as the uninterrupted run.

Epochs are numbered from 1 (`epoch 1` is the first), as the console, metrics.json, checkpoint
names and the report count them; Lightning's own `trainer.current_epoch` and the checkpoint's
`epoch` key stay 0-based underneath.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from typing_extensions import override

FIRST_EPOCH = 1  # the number of the first epoch, wherever a person reads one


def epoch_number(trainer: L.Trainer) -> int:
    """The epoch now running (or just finished), counted from 1."""
    return trainer.current_epoch + FIRST_EPOCH


class EpochHistory(L.Callback):
    """Keeps one dict of scalar metrics per epoch in `self.epochs` (sorted by epoch)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._finished_epoch: int | None = None  # train metrics not yet merged

    def _row(self, epoch: int) -> dict[str, float]:
        for row in self.epochs:
            if row["epoch"] == epoch:
                return row
        self.epochs.append({"epoch": epoch})
        self.epochs.sort(key=lambda row: row["epoch"])
        return self._row(epoch)

    def _merge(self, trainer: L.Trainer, epoch: int, validation: bool) -> None:
        row = self._row(epoch)
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val/") == validation and value.numel() == 1:
                row[name] = float(value)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._merge(trainer, epoch_number(trainer), validation=True)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's train metrics are published after this hook: merged at the next start/end.
        self._finished_epoch = epoch_number(trainer)

    def _merge_finished(self, trainer: L.Trainer) -> None:
        if self._finished_epoch is not None:
            self._merge(trainer, self._finished_epoch, validation=False)
            self._finished_epoch = None

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._merge_finished(trainer)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._merge_finished(trainer)

    @override
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._finished_epoch is None:
            return
        # The module's train metrics and those of callbacks logging at the epoch's end (reg/).
        logged = {}
        for source in [pl_module, *trainer.callbacks]:
            if hasattr(source, "epoch_metrics"):
                logged |= source.epoch_metrics("train")
        state = checkpoint["callbacks"][self.state_key]
        rows = {row["epoch"]: dict(row) for row in state["epochs"]}
        finished = rows.get(self._finished_epoch, {"epoch": self._finished_epoch})
        rows[self._finished_epoch] = {**finished, **logged}
        state["epochs"] = [rows[epoch] for epoch in sorted(rows)]

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

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(row) for row in self.epochs], "first_epoch": FIRST_EPOCH}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint written before epochs were counted from 1 holds 0-based rows.
        shift = FIRST_EPOCH - state_dict.get("first_epoch", 0)
        self.epochs = [{**row, "epoch": row["epoch"] + shift} for row in state_dict["epochs"]]
