"""Tasks: what a data set's targets are, and how the LightningModule trains on and scores them.

A task is one entry of `TASKS`: its loss, its metrics with the direction each improves in, the
shape of the net's output, and the transform from outputs to predictions. A data module names
its task (`task = CLASSIFICATION`, the `data` config group picks the data module); the module
(reglab.module), the data base class and the controls ask the entry, never the task's name.
A new task (multi-label, segmentation) is one `TASKS.register(name, Task(...))`, here or in a
module of the user's named in `plugins`.

Registering a task declares its metrics' directions (reglab.metric_directions). This module
imports no torch, so the config checks and the report can read them before torch is loaded;
the entries' functions import it when they run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reglab.metric_directions import declare
from reglab.registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

# Every task's loss, logged by the module as <stage>/loss beside the task's own metrics.
LOSS = "loss"
declare({LOSS: "min"})


@dataclass(frozen=True)
class Metric:
    """One metric of a task: which way it improves, and `build(num_outputs)` -> a torchmetrics
    Metric that is updated with the `scored` outputs and targets of a whole epoch."""

    direction: str
    build: Callable[[int], Any]


@dataclass(frozen=True)
class Task:
    """How the net of a task is shaped, trained and scored.

    `loss(outputs, targets, label_smoothing)` is the training loss of a batch; `metrics` are
    logged as <stage>/<name>; `scored(outputs, targets)` gives what the metrics take; `predict`
    turns outputs into what `trainer.predict` returns. With `class_labels` the targets are class
    ids 0..C-1: the net has one output per class, splits are stratified, and `label_noise`,
    `label_smoothing`, mixup/cutmix and MC dropout apply. With `standardize_targets` the real
    valued targets are standardized when `data.standardize_target` is on.
    """

    loss: Callable[[Tensor, Tensor, float], Tensor]
    metrics: Mapping[str, Metric]
    scored: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
    predict: Callable[[Tensor], Tensor]
    class_labels: bool = False
    standardize_targets: bool = False

    def num_outputs(self, num_classes: int | None, target_shape: tuple[int, ...]) -> int:
        """Width of the net's output: one score per class, or one value per target element."""
        return int(num_classes) if self.class_labels else math.prod(target_shape)

    def output_shape(self, num_outputs: int, target_shape: list[int] | None) -> tuple[int, ...]:
        """What a net without a head must produce: class scores, or one value per target element
        in the target's shape (a denoising target is a whole image)."""
        if target_shape and not self.class_labels:
            return tuple(target_shape)
        return (num_outputs,)


class TaskRegistry(Registry[Task]):
    """The registry of tasks; registering one declares its metrics' directions."""

    def register(self, name: str, entry: Task | None = None) -> Any:
        """Add `entry` under `name` (as `Registry.register`) and declare its metrics' directions."""
        if entry is not None:
            if LOSS in entry.metrics:
                raise KeyError(f"task {name!r}: {LOSS!r} is every task's loss, not a metric name")
            declare({metric: spec.direction for metric, spec in entry.metrics.items()})
        return super().register(name, entry)


TASKS = TaskRegistry("task")


def task_of(owner: Any) -> Task:
    """The task of a module or data module (its `task` name; classification without one)."""
    return TASKS.get(task_name(owner), "task")


def task_name(owner: Any) -> str:
    """The name of the task of a module or data module (classification without one)."""
    return getattr(owner, "task", CLASSIFICATION)


# --- classification: class ids, cross-entropy, accuracy and macro F1 ---------------------------
def _cross_entropy(outputs: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    # Hard or soft (mixup/cutmix) targets. Label smoothing as torch defines it (Szegedy et al.
    # 2016): the target distribution is (1 - eps) * target + eps / classes, for both.
    from torch.nn import functional

    return functional.cross_entropy(outputs, targets, label_smoothing=label_smoothing)


def _dominant_class(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    # Soft targets (mixup/cutmix) are scored by their dominant class.
    return outputs, targets.argmax(dim=1) if targets.dtype.is_floating_point else targets


def _accuracy(num_outputs: int) -> Any:
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=num_outputs, average="micro")


def _macro_f1(num_outputs: int) -> Any:
    from torchmetrics.classification import MulticlassF1Score

    return MulticlassF1Score(num_classes=num_outputs, average="macro")


def _probabilities(outputs: Tensor) -> Tensor:
    return outputs.softmax(dim=-1)


CLASSIFICATION = "classification"
TASKS.register(
    CLASSIFICATION,
    Task(
        loss=_cross_entropy,
        metrics={"acc": Metric("max", _accuracy), "f1": Metric("max", _macro_f1)},
        scored=_dominant_class,
        predict=_probabilities,
        class_labels=True,
    ),
)


# --- regression: real targets of any shape, mean squared error, MSE / MAE / R2 ----------------
def _mse(outputs: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    from torch.nn import functional

    return functional.mse_loss(outputs, targets)


def _columns(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    # Regression metrics take (N, outputs): an image target is 64 outputs; one output is (N,).
    def flat(t: Tensor) -> Tensor:
        t = t.reshape(len(t), -1)
        return t.squeeze(1) if t.shape[1] == 1 else t

    return flat(outputs), flat(targets)


def _mean_squared_error(num_outputs: int) -> Any:
    from torchmetrics.regression import MeanSquaredError

    return MeanSquaredError()  # MSE and MAE average over every output


def _mean_absolute_error(num_outputs: int) -> Any:
    from torchmetrics.regression import MeanAbsoluteError

    return MeanAbsoluteError()


def _r2(num_outputs: int) -> Any:
    # Pooled over the outputs, 1 - SSE / SST over all of them (sklearn's variance_weighted): an
    # image target's constant border pixels have no variance, and a per-output average would
    # divide by it.
    from torchmetrics.regression import R2Score

    return R2Score(multioutput="variance_weighted")


def _outputs(outputs: Tensor) -> Tensor:
    return outputs


REGRESSION = "regression"
TASKS.register(
    REGRESSION,
    Task(
        loss=_mse,
        metrics={
            "mse": Metric("min", _mean_squared_error),
            "mae": Metric("min", _mean_absolute_error),
            "r2": Metric("max", _r2),
        },
        scored=_columns,
        predict=_outputs,
        standardize_targets=True,
    ),
)
