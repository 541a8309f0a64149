"""`debug=overfit`: one fixed training batch, no early stopping, a training loss near zero.

Runs the composed config in-process (`reglab.run.run_one`) with a callback that records the
training batches, so "the same batch every epoch" is checked on the batches the model saw.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from typing_extensions import override

from conftest import compose_config, read_metrics
from reglab.run import run_one


class TrainingBatches(L.Callback):
    """Counts the training batches of each epoch and those that differ from the first one."""

    def __init__(self) -> None:
        self.per_epoch: dict[int, int] = {}
        self.first: tuple[torch.Tensor, torch.Tensor] | None = None
        self.different = 0

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.per_epoch[epoch] = self.per_epoch.get(epoch, 0) + 1
        x, y = (t.detach().clone() for t in batch)
        if self.first is None:
            self.first = (x, y)
        elif not (torch.equal(x, self.first[0]) and torch.equal(y, self.first[1])):
            self.different += 1


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
@pytest.mark.parametrize("model", [[], ["model=mlp"]], ids=["default_model", "mlp"])
def test_overfit_trains_one_fixed_batch_to_near_zero_loss(tmp_path, model, one_thread):
    cfg = compose_config(["debug=overfit", "logger=none", *model], tmp_path / "run")
    batches = TrainingBatches()
    run_one(cfg, extra_callbacks=[batches])
    record = read_metrics(tmp_path / "run")
    epochs = cfg.trainer.max_epochs
    # Not stopped early: every epoch ran, although the validation loss rises while overfitting.
    assert record["stopped_epoch"] is None and record["epochs_run"] == epochs
    # One batch an epoch, and the same samples in the same order every time.
    assert batches.per_epoch == dict.fromkeys(range(epochs), 1)
    assert batches.different == 0
    # It learned that batch: from chance level (ln 10 = 2.3 for the 10 digits) to about zero.
    losses = [entry["train/loss"] for entry in record["history"]]
    assert losses[0] > 1.0
    assert record["final"]["train/loss"] < 0.05
    assert record["final"]["train/acc"] == 1.0
