"""The one LightningModule: a net from the layer catalogue + a task (classification/regression).

Metrics are torchmetrics objects logged once per epoch. Steps only keep their detached outputs;
the metrics see the whole epoch in one update at its end, which costs a fraction of a per-step
update (per-step logging costs about 0.4 ms a step, so it is opt-in with `log_every_step`). All constructor arguments are
plain containers, so `RegLabModule.load_from_checkpoint(path)` rebuilds the same net.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import get_class
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from reglab import checks
from reglab.callbacks.mc_dropout import mc_predict
from reglab.data.base import TASKS
from reglab.errors import ConfigError
from reglab.nn import build_net

STAGES = ("train", "val", "test")


class RegLabModule(L.LightningModule):
    """Net + loss + metrics + optimizer/scheduler built from plain config dicts."""

    # Set by the MC-dropout callback (dropout=mc): predict averages this many dropout-on passes.
    predict_passes: int = 1

    def __init__(
        self,
        model: dict,
        input_shape: list[int],
        num_outputs: int,
        task: str = "classification",
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        monitor: str = "val/loss",
        log_every_step: bool = False,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ConfigError("data.task", f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        self.save_hyperparameters()
        self.net = build_net(model, input_shape, num_outputs)
        self.task = task
        self.log_every_step = log_every_step
        template = _metrics(task, num_outputs)
        # Keyed "<stage>_" because nn.Module already has an attribute named `train`.
        self.losses = nn.ModuleDict({f"{stage}_": MeanMetric() for stage in STAGES})
        self.metrics = nn.ModuleDict(
            {f"{stage}_": template.clone(prefix=f"{stage}/") for stage in STAGES}
        )
        self._epoch_outputs: dict[str, list] = {stage: [] for stage in STAGES}

    @property
    def example_input_array(self) -> torch.Tensor:
        """Two zero inputs for the model summary and `logger.log_graph=true`, in the net's dtype.

        A property because `trainer.precision=64-true` (or bf16-true) converts the module's
        parameters after construction, and Lightning passes this tensor to the net as it is.
        """
        parameter = next(self.net.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        return torch.zeros(2, *self.hparams.input_shape, dtype=dtype, device=self.device)

    def metric_names(self, stage: str) -> list[str]:
        """Names this module logs for `stage`, e.g. val/loss, val/acc, val/f1."""
        return [
            f"{stage}/loss",
            *(f"{stage}/{name}" for name in self.metrics["train_"].keys(keep_base=True)),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw net outputs: logits for classification, predictions for regression."""
        return self.net(x)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (hard or soft targets) or mean squared error."""
        if self.task == "classification":
            return F.cross_entropy(outputs, y)
        return F.mse_loss(outputs, y)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        outputs = self(x)
        loss = self.loss(outputs, y)
        self._epoch_outputs[stage].append((outputs.detach(), y, loss.detach() * len(x)))
        if self.log_every_step and stage == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of one training batch (regularization callbacks act on its gradients)."""
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Update validation loss and metrics."""
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Update test loss and metrics."""
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities, or regression outputs; MC-averaged when `predict_passes` > 1."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if self.predict_passes > 1 and self.task == "classification":
            return mc_predict(self, x, self.predict_passes).mean(0)
        outputs = self(x)
        return outputs.softmax(dim=-1) if self.task == "classification" else outputs

    def epoch_data_loss(self, stage: str) -> float | None:
        """Mean loss of the steps of the running epoch (None before its first step)."""
        pending = self._epoch_outputs[stage]
        if not pending:
            return None
        samples = sum(len(outputs) for outputs, _, _ in pending)
        return float(sum(loss_sum for _, _, loss_sum in pending) / samples)

    def _log_epoch(self, stage: str) -> None:
        pending, self._epoch_outputs[stage] = self._epoch_outputs[stage], []
        if pending:
            outputs, targets, loss_sums = (torch.cat(part) for part in _unzip(pending))
            if targets.dtype.is_floating_point and self.task == "classification":
                targets = targets.argmax(dim=1)  # soft targets (mixup/cutmix): dominant class
            self.metrics[f"{stage}_"].update(
                _for_metrics(outputs, self.task), _for_metrics(targets, self.task)
            )
            self.losses[f"{stage}_"].update(loss_sums.sum() / len(outputs), weight=len(outputs))
        self.log(f"{stage}/loss", self.losses[f"{stage}_"], prog_bar=stage == "val")
        self.log_dict(self.metrics[f"{stage}_"], prog_bar=stage == "val")

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training loss and metrics."""
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation loss and metrics."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log test loss and metrics."""
        self._log_epoch("test")

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, with decoupled weight decay on weights (ndim > 1) only."""
        config = dict(self.hparams.optimizer or {"_target_": "torch.optim.Adam", "lr": 1e-3})
        optimizer_cls = get_class(config.pop("_target_"))
        weight_decay = config.pop("weight_decay", 0.0)
        return optimizer_cls(_parameter_groups(self.net, weight_decay), **config)

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """The learning-rate scheduler of the `scheduler` config (which must not be empty)."""
        config = dict(self.hparams.scheduler)
        config.pop("interval", None)
        return get_class(config.pop("_target_"))(optimizer, **config)

    def configure_optimizers(self) -> Any:
        """Optimizer and, if configured, a scheduler stepped every epoch (or `interval`)."""
        optimizer = self.build_optimizer()
        if not self.hparams.scheduler:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.build_scheduler(optimizer),
                "monitor": self.hparams.monitor,
                "interval": self.hparams.scheduler.get("interval", "epoch"),
            },
        }


# Words of torch's optimizer / scheduler error messages -> the config key they are about.
_MESSAGE_KEYS = {
    "learning rate": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "epsilon": "eps",
    "beta": "betas",
    "factor": "factor",
    "dampening": "dampening",
}


def _config_error(group: str, error: Exception) -> ConfigError:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    key = next((k for word, k in _MESSAGE_KEYS.items() if word in message.lower()), None)
    return ConfigError(f"{group}.{key}" if key else group, message)


def check_optimization(module: RegLabModule) -> None:
    """Build the optimizer and scheduler once and step them, so bad values fail before training."""
    try:
        optimizer = module.build_optimizer()
    except (ValueError, TypeError) as error:
        raise _config_error("optimizer", error) from None
    scheduler_config = module.hparams.get("scheduler") or {}
    for key in ("step_size", "T_max"):  # torch accepts 0 and fails with ZeroDivisionError later
        if key in scheduler_config:
            checks.integer(f"scheduler.{key}", scheduler_config[key], minimum=1)
    if not scheduler_config:
        return
    try:
        scheduler = module.build_scheduler(optimizer)
        optimizer.step()  # no gradients yet: changes nothing
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(1.0)
        else:
            scheduler.step()
    except (ValueError, TypeError, ZeroDivisionError) as error:
        raise _config_error("scheduler", error) from None


def _parameter_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weights (ndim > 1) decay; biases and normalization parameters do not."""
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _metrics(task: str, num_outputs: int) -> MetricCollection:
    if task == "classification":
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes=num_outputs, average="micro"),
                "f1": MulticlassF1Score(num_classes=num_outputs, average="macro"),
            }
        )
    return MetricCollection(
        {
            # MSE/MAE average over every output; R2 averages per-output scores.
            "mse": MeanSquaredError(),
            "mae": MeanAbsoluteError(),
            "r2": R2Score(multioutput="uniform_average"),
        }
    )


def _unzip(rows: list[tuple]) -> tuple[list, list, list]:
    outputs, targets, loss_sums = zip(*rows, strict=True)
    return list(outputs), list(targets), [t.reshape(1) for t in loss_sums]


def _for_metrics(t: torch.Tensor, task: str) -> torch.Tensor:
    # Single-output regression metrics want (N,), not (N, 1).
    if task == "regression" and t.ndim == 2 and t.shape[1] == 1:
        return t.squeeze(1)
    return t
