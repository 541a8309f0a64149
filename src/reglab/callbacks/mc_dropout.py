"""Monte-Carlo dropout at validation, test and predict; driven by `dropout=mc`.

Lightning evaluates in eval mode, so the module's own metrics stay deterministic. For every
evaluation batch this callback switches only the dropout layers back to train mode (BatchNorm
stays in eval and its running statistics are untouched), averages `samples` stochastic softmax
outputs, switches them back, and logs `<stage>/mc_acc`, `<stage>/mc_loss` (NLL of the mean), the
mean predictive entropy `<stage>/mc_entropy` and `<stage>/mc_spread` (mean std across passes).
In predict, `trainer.predict` returns the MC-averaged class probabilities instead of one pass.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from reglab import checks
from reglab.callbacks.dropout_schedule import dropout_modules, set_dropout_p
from reglab.errors import ConfigError

STAGES = ("val", "test", "predict")


@torch.no_grad()
def mc_predict(net: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Class probabilities of `samples` passes with dropout on: shape (samples, N, C)."""
    layers = dropout_modules(net)
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.train()
    try:
        return torch.stack([F.softmax(net(x), dim=-1) for _ in range(samples)])
    finally:
        for layer, mode in zip(layers, modes, strict=True):
            layer.train(mode)


class MCDropout(L.Callback):
    """Logs MC-dropout metrics next to the deterministic ones (see module docstring)."""

    def __init__(
        self, samples: int = 20, stages: list[str] | None = None, p: float | None = None
    ) -> None:
        self.samples = checks.integer("dropout.samples", samples, minimum=2)
        # p: train and evaluate with this p in every dropout layer (None: keep the model's p).
        self.p = None if p is None else checks.probability("dropout.p", p, allow_one=False)
        self.stages = [checks.choice("dropout.stages", s, STAGES) for s in stages or STAGES]
        self._sums: dict[str, torch.Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """MC dropout needs dropout layers and a classification task."""
        if not dropout_modules(pl_module):
            raise ConfigError("dropout", "MC dropout needs a model with dropout layers")
        if getattr(pl_module, "task", "classification") != "classification":
            raise ConfigError("dropout", "MC dropout metrics are defined for classification")
        if self.p is not None:
            set_dropout_p(pl_module, self.p)

    def _reset(self) -> None:
        self._sums = {}

    def _update(self, stage: str, pl_module: L.LightningModule, batch: Any) -> None:
        if stage not in self.stages or (stage == "val" and pl_module.trainer.sanity_checking):
            return
        x, y = batch
        probs = mc_predict(pl_module, x, self.samples)
        mean = probs.mean(0)
        if y.dtype.is_floating_point:
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

    def _log(self, stage: str, pl_module: L.LightningModule) -> None:
        if stage not in self.stages or not self._sums:
            return
        sums = {k: v for k, v in self._sums.items()}
        if pl_module.trainer.world_size > 1:  # exact totals over every rank's shard
            sums = {
                k: pl_module.trainer.strategy.reduce(v, reduce_op="sum") for k, v in sums.items()
            }
        count = sums.pop("count")
        metrics = {
            f"{stage}/mc_acc": sums["correct"] / count,
            f"{stage}/mc_loss": sums["nll"] / count,
            f"{stage}/mc_entropy": sums["entropy"] / count,
            f"{stage}/mc_spread": sums["spread"] / count,
        }
        pl_module.log_dict({k: v.float() for k, v in metrics.items()}, on_step=False, on_epoch=True)
        self._reset()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Make predict_step return the mean of `samples` dropout-on passes."""
        if "predict" in self.stages:
            pl_module.predict_passes = self.samples

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Back to deterministic predictions."""
        pl_module.predict_passes = 1

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start a fresh MC tally."""
        self._reset()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start a fresh MC tally."""
        self._reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """T stochastic passes over this validation batch."""
        self._update("val", pl_module, batch)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """T stochastic passes over this test batch."""
        self._update("test", pl_module, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the validation MC metrics."""
        self._log("val", pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log the test MC metrics."""
        self._log("test", pl_module)
