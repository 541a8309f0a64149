"""The base of the callbacks that act on training, each chosen by one config group.

A control checks in `check(module)` that it can act on the model (a dropout schedule needs dropout
layers, image augmentation needs images, ...). `reglab.run` calls `check` before training and
reports a refusal under the group's config path (`dropout`, `augmentation.ops[0]`); `setup` calls
it again, so a control used directly with a Lightning Trainer refuses the same models.
Errors name the control's own arguments only: the config path is added by the config layer.
A control that acts right after each optimizer step (a proximal step, a constraint's projection)
registers its function with `StepHooks`: Lightning has no hook there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.utils.hooks import RemovableHandle
from typing_extensions import override


class Control(L.Callback):
    """A callback that changes training; override `check` to refuse a model it cannot act on."""

    def check(self, pl_module: L.LightningModule) -> None:
        """Raise ConfigError if this control cannot act on `pl_module` (default: it can)."""

    def metric_names(self, stage: str) -> list[str]:
        """The metrics this control logs for `stage` (`val/mc_acc`, ...), beyond the module's."""
        return []

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.check(pl_module)


class StepHooks:
    """A function run right after every step of the trainer's optimizers, during one fit.

    A torch optimizer step post-hook (`hook(optimizer, args, kwargs)`) on each of
    `trainer.optimizers`: it follows each real step, once per step whatever
    `accumulate_grad_batches` is, and not a step AMP's grad scaler skips.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def register(
        self, trainer: L.Trainer, hook: Callable[[torch.optim.Optimizer, Any, Any], None]
    ) -> None:
        """Run `hook` after every step of each of the trainer's optimizers (until `remove`)."""
        self.remove()
        self._handles = [o.register_step_post_hook(hook) for o in trainer.optimizers]

    def remove(self) -> None:
        """Stop running the hook (at the end of fitting)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
