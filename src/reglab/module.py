"""The one LightningModule: a net from the layer catalogue + a task (reglab.tasks).

The task (the data's: classification, regression, or one a plugin registers) gives the loss,
the metrics, the output shape and the prediction transform.

Metrics are torchmetrics objects computed once per epoch. Steps only keep their detached outputs;
the metrics see the whole epoch in one update at its end, which costs a fraction of a per-step
update (per-step logging costs about 0.4 ms a step, so it is opt-in with `log_every_step`), and
their computed values are logged. All constructor arguments are plain containers, so
`RegLabModule.load_from_checkpoint(path)` rebuilds the same net.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from typing_extensions import override

from reglab import checks
from reglab.errors import ConfigError
from reglab.nn import build_net
from reglab.optim import build_optimizer, build_scheduler
from reglab.tasks import CLASSIFICATION, LOSS, TASKS

STAGES = ("train", "val", "test")
# Attributes Lightning rewrites around each hook call; never a tensor or module.
PLAIN_ATTRIBUTES = frozenset({"_current_fx_name"})


class RegLabModule(L.LightningModule):
    """Net + loss + metrics + optimizer/scheduler built from plain config dicts."""

    def __init__(
        self,
        model: dict,
        input_shape: list[int],
        num_outputs: int,
        task: str = CLASSIFICATION,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        monitor: str = "val/loss",
        log_every_step: bool = False,
        input_dtype: str = "float32",
        vocab_size: int | None = None,
        target_shape: list[int] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        checks.choice("task", task, TASKS.names())
        check_label_smoothing(label_smoothing, task)
        self.save_hyperparameters()
        self._task = TASKS.get(task)
        self.net = build_net(
            model,
            input_shape,
            num_outputs,
            input_dtype=getattr(torch, input_dtype),
            vocab_size=vocab_size,
            output_shape=self._task.output_shape(num_outputs, target_shape),
        )
        self.task = task
        self.label_smoothing = label_smoothing
        self.log_every_step = log_every_step
        template = MetricCollection(
            {name: metric.build(num_outputs) for name, metric in self._task.metrics.items()}
        )
        # Keyed "<stage>_" because nn.Module already has an attribute named `train`.
        self.losses = nn.ModuleDict({f"{stage}_": MeanMetric() for stage in STAGES})
        self.metrics = nn.ModuleDict(
            {f"{stage}_": template.clone(prefix=f"{stage}/") for stage in STAGES}
        )
        self._epoch_outputs: dict[str, list] = {stage: [] for stage in STAGES}

    @override
    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` before and after every hook it calls (about a
        # thousand times an epoch); nn.Module's __setattr__ checks for parameters, buffers and
        # submodules first and costs ten times a plain attribute write.
        if name in PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def example_input_array(self) -> torch.Tensor:
        """Two zero inputs for the model summary and `logger.log_graph=true`, in the net's dtype.

        A property because `trainer.precision=64-true` (or bf16-true) converts the module's
        parameters after construction, and Lightning passes this tensor to the net as it is.
        """
        dtype = getattr(torch, self.hparams.input_dtype)
        if dtype.is_floating_point:
            parameter = next(self.net.parameters(), None)
            dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        return torch.zeros(2, *self.hparams.input_shape, dtype=dtype, device=self.device)

    def metric_names(self, stage: str) -> list[str]:
        """Names this module logs for `stage`, e.g. val/loss, val/acc, val/f1."""
        return [
            f"{stage}/{LOSS}",
            *(f"{stage}/{name}" for name in self.metrics["train_"].keys(keep_base=True)),
        ]

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw net outputs (logits for classification, predictions for regression)."""
        return self.net(x)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The task's loss: cross-entropy (hard or soft targets, optionally label-smoothed) for
        classification, mean squared error for regression."""
        return self._task.loss(outputs, y, self.label_smoothing)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        outputs = self(x)
        loss = self.loss(outputs, y)
        self._epoch_outputs[stage].append((outputs.detach(), y, loss.detach() * len(x)))
        if self.log_every_step and stage == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
        return loss

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Loss of one training batch (regularization callbacks act on its gradients)."""
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Keep the batch's outputs for the epoch's loss and metrics (validation or test)."""
        self._step(batch, self._evaluation_stage())

    test_step = validation_step

    def _evaluation_stage(self) -> str:
        return "test" if self.trainer.testing else "val"

    @override
    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The task's predictions: class probabilities, or regression outputs (MC dropout:
        `reglab.nn.modes.mc_predict`)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self._task.predict(self(x))

    def epoch_data_loss(self, stage: str) -> float | None:
        """Mean loss of the steps of the running epoch (None before its first step)."""
        pending = self._epoch_outputs[stage]
        if not pending:
            return None
        samples = sum(len(outputs) for outputs, _, _ in pending)
        return float(sum(loss_sum for _, _, loss_sum in pending) / samples)

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The values `stage`'s epoch end logged, before Lightning publishes them (e.g. for a
        checkpoint written in the same hook); empty before the epoch's metrics were updated."""
        if not self.losses[f"{stage}_"].update_called:
            return {}
        return {name: float(value) for name, value in self._computed(stage).items()}

    def _computed(self, stage: str) -> dict[str, torch.Tensor]:
        # compute() syncs across processes, and caches its result until the next update.
        return {
            f"{stage}/{LOSS}": self.losses[f"{stage}_"].compute(),
            **self.metrics[f"{stage}_"].compute(),
        }

    def _log_epoch(self, stage: str) -> None:
        pending, self._epoch_outputs[stage] = self._epoch_outputs[stage], []
        if not pending:
            return
        loss, metrics = self.losses[f"{stage}_"], self.metrics[f"{stage}_"]
        # Reset here, not when the epoch ends: `epoch_metrics` reads them until the next epoch's.
        loss.reset()
        metrics.reset()
        outputs, targets, loss_sums = (torch.cat(part) for part in _unzip(pending))
        metrics.update(*self._task.scored(outputs, targets))
        loss.update(loss_sums.sum() / len(outputs), weight=len(outputs))
        # Logged as computed values, not as the Metric objects: Lightning's bookkeeping of a
        # logged Metric costs about 1.7 ms a value per epoch. compute() has already reduced them
        # across processes, so every rank holds the same values: sync_dist's mean leaves them as
        # they are (and Lightning does not warn about unsynced epoch values under DDP).
        self.log_dict(self._computed(stage), prog_bar=stage == "val", sync_dist=True)

    @override
    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self._evaluation_stage())

    on_test_epoch_end = on_validation_epoch_end

    @override
    def configure_optimizers(self) -> Any:
        """Optimizer and, if configured, a scheduler stepped every epoch (or `interval`)."""
        optimizer = build_optimizer(self.net, self.hparams.optimizer)
        if not self.hparams.scheduler:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": build_scheduler(optimizer, self.hparams.scheduler),
                "monitor": self.hparams.monitor,
                "interval": self.hparams.scheduler.get("interval", "epoch"),
            },
        }


def check_label_smoothing(label_smoothing: float, task: str) -> float:
    """`label_smoothing` in [0, 1), and 0 unless the task's targets are class labels."""
    checks.probability("label_smoothing", label_smoothing, allow_one=False)
    if label_smoothing and not TASKS.get(task, "task").class_labels:
        raise ConfigError(
            "label_smoothing", f"applies to classification only; the data's task is {task}"
        )
    return label_smoothing


def _unzip(rows: list[tuple]) -> tuple[list, list, list]:
    outputs, targets, loss_sums = zip(*rows, strict=True)
    return list(outputs), list(targets), [t.reshape(1) for t in loss_sums]
