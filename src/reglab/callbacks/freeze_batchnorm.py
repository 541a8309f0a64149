"""Freezes BatchNorm from a given epoch on; driven by `batchnorm=freeze`.

From `switch_epoch` on, every BatchNorm layer is put in eval mode at the start of each training
epoch (running mean and variance stop moving; batches are normalized with them), and with
`freeze_affine` its weight and bias stop training too. Lightning restores each module's own mode
after validation, so the layers stay frozen; setting them again each epoch keeps it so even if
something calls `model.train()`, and after a resume.
"""

from __future__ import annotations

import lightning as L
from typing_extensions import override

from reglab import checks
from reglab.callbacks.control import Control
from reglab.errors import ConfigError
from reglab.nn.modes import batchnorm_modules


class FreezeBatchNorm(Control):
    """BatchNorm to eval mode (and optionally frozen affine) from epoch `switch_epoch` on."""

    def __init__(self, switch_epoch: int = 5, freeze_affine: bool = False) -> None:
        self.switch_epoch = checks.integer("switch_epoch", switch_epoch)
        self.freeze_affine = bool(freeze_affine)

    @override
    def check(self, pl_module: L.LightningModule) -> None:
        if not batchnorm_modules(pl_module):
            raise ConfigError("", "freezing BatchNorm needs a model with BatchNorm layers")

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch < self.switch_epoch:
            return
        for module in batchnorm_modules(pl_module):
            module.eval()
            if self.freeze_affine:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
