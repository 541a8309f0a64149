"""Freezes BatchNorm after a given epoch; driven by `dropout=freeze_bn`.

From `epoch` on, every BatchNorm layer is put in eval mode at the start of each training epoch
(running mean and variance stop moving; batches are normalized with them), and with
`freeze_affine` its weight and bias stop training too. Lightning restores each module's own mode
after validation, so the layers stay frozen; setting them again each epoch keeps it so even if
something calls `model.train()`.
"""

from __future__ import annotations

import lightning as L
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from reglab import checks
from reglab.errors import ConfigError


def batchnorm_modules(module: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer (1d, 2d, 3d, SyncBatchNorm) in `module`."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


class FreezeBatchNorm(L.Callback):
    """BatchNorm to eval mode (and optionally frozen affine) from epoch `epoch` on."""

    def __init__(self, epoch: int = 5, freeze_affine: bool = False) -> None:
        self.epoch = checks.integer("dropout.epoch", epoch)
        self.freeze_affine = bool(freeze_affine)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a model without BatchNorm: there would be nothing to freeze."""
        if not batchnorm_modules(pl_module):
            raise ConfigError("dropout", "freeze_bn needs a model with BatchNorm layers")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """From the freeze epoch on: eval mode, and no gradient for the affine parameters."""
        if trainer.current_epoch < self.epoch:
            return
        for module in batchnorm_modules(pl_module):
            module.eval()
            if self.freeze_affine:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
