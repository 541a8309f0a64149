"""Monte-Carlo dropout metrics at validation and test; driven by `dropout=mc`.

Lightning evaluates in eval mode, so the module's own metrics stay deterministic. For every
evaluation batch this callback switches only the dropout carriers back to train mode (Dropout
layers, DropPath, LSTM/GRU dropout between layers, attention dropout, and a TransformerEncoderLayer
itself, whose eval fast path would skip its dropout: `reglab.nn.modes.dropout_on`; BatchNorm
stays in eval and its running statistics are untouched), averages `samples` stochastic softmax
outputs at the rates the model was built with (`model.dropout`), restores every mode, and
logs `<stage>/mc_acc`, `<stage>/mc_loss` (NLL of the mean), the mean predictive entropy
`<stage>/mc_entropy` and `<stage>/mc_spread` (mean std across passes); it declares which way
each improves (reglab.metric_directions, read by the early-stopping check). The sanity check is
skipped. `trainer.predict` stays deterministic: MC predictions are the explicit function
`reglab.nn.modes.mc_predict(model.net, x, samples)`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import RunningStage
from typing_extensions import override

from reglab import checks
from reglab.callbacks.control import Control
from reglab.errors import ConfigError
from reglab.metric_directions import declare
from reglab.nn.modes import dropout_carriers, mc_predict
from reglab.tasks import task_of

STAGES = ("val", "test")
# The metric prefix of each evaluation stage; the sanity check is not one of them.
STAGE_PREFIX = {RunningStage.VALIDATING: "val", RunningStage.TESTING: "test"}
# What it logs per stage, and which way each improves.
METRICS = declare({"mc_acc": "max", "mc_loss": "min", "mc_entropy": "min", "mc_spread": "min"})


class MCDropout(Control):
    """Logs MC-dropout metrics next to the deterministic ones (see module docstring)."""

    def __init__(self, samples: int = 20, stages: list[str] | None = None) -> None:
        self.samples = checks.integer("samples", samples, minimum=2)
        self.stages = [
            checks.choice(f"stages[{i}]", stage, STAGES)
            for i, stage in enumerate(STAGES if stages is None else stages)
        ]
        self._sums: dict[str, torch.Tensor] = {}

    @override
    def check(self, pl_module: L.LightningModule) -> None:
        if not dropout_carriers(pl_module):
            raise ConfigError(
                "",
                "MC dropout needs a model with dropout layers (or DropPath, attention dropout, or "
                "LSTM/GRU dropout between layers: num_layers > 1); this model has none",
            )
        if not task_of(pl_module).class_labels:
            raise ConfigError("", "MC dropout metrics are defined for classification")

    @override
    def metric_names(self, stage: str) -> list[str]:
        if stage not in self.stages:
            return []
        return [f"{stage}/{name}" for name in METRICS]

    def _stage(self, trainer: L.Trainer) -> str | None:
        """'val' or 'test' when MC metrics are wanted for the running stage, else None."""
        stage = STAGE_PREFIX.get(trainer.state.stage)
        return stage if stage in self.stages else None

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sums = {}

    on_test_epoch_start = on_validation_epoch_start

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._stage(trainer) is None:
            return
        x, y = batch
        probs = mc_predict(pl_module, x, self.samples)
        mean = probs.mean(0)
        if y.dtype.is_floating_point:  # probability targets: their most likely class
            y = y.argmax(dim=1)
        terms = {
            "correct": (mean.argmax(1) == y).sum(),
            "nll": F.nll_loss(mean.clamp_min(1e-12).log(), y, reduction="sum"),
            "entropy": -(mean * mean.clamp_min(1e-12).log()).sum(),
            "spread": probs.std(0).mean(1).sum(),
            "count": torch.tensor(float(len(y)), device=x.device),
        }
        for name, value in terms.items():
            self._sums[name] = self._sums.get(name, 0) + value.double()

    on_test_batch_end = on_validation_batch_end

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stage = self._stage(trainer)
        if stage is None or not self._sums:
            return
        sums = dict(self._sums)
        if trainer.world_size > 1:  # exact totals over every rank's shard
            sums = {k: trainer.strategy.reduce(v, reduce_op="sum") for k, v in sums.items()}
        count = sums.pop("count")
        metrics = {
            f"{stage}/mc_acc": sums["correct"] / count,
            f"{stage}/mc_loss": sums["nll"] / count,
            f"{stage}/mc_entropy": sums["entropy"] / count,
            f"{stage}/mc_spread": sums["spread"] / count,
        }
        # Totals over every rank already: sync_dist's mean of equal values leaves them unchanged.
        pl_module.log_dict(
            {k: v.float() for k, v in metrics.items()}, on_step=False, on_epoch=True, sync_dist=True
        )
        self._sums = {}

    on_test_epoch_end = on_validation_epoch_end
