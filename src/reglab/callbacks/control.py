"""The base of the callbacks that act on training, each chosen by one config group.

A control checks in `check(module)` that it can act on the model (a dropout schedule needs dropout
layers, image augmentation needs images, ...). `reglab.run` calls `check` before training and
reports a refusal under the group's config path (`dropout`, `augmentation.ops[0]`); `setup` calls
it again, so a control used directly with a Lightning Trainer refuses the same models.
Errors name the control's own arguments only: the config path is added by the config layer.
"""

from __future__ import annotations

import lightning as L
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
