"""Checks that evaluation really runs in eval mode; driven by `callbacks` (on by default).

At the first batch of every validation and test epoch it asserts that no module of the model
is in train mode: dropout off, BatchNorm on its running statistics. (MC dropout switches dropout
on only inside its own extra passes, so it passes the audit too.) Once per run it logs the
mode of every module during training and during evaluation. The check costs one walk over the
modules per evaluation epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch import nn


def modes(module: nn.Module) -> dict[str, str]:
    """'train' or 'eval' for `module` and every named submodule."""
    return {
        name or "(root)": ("train" if m.training else "eval") for name, m in module.named_modules()
    }


class EvalModeAudit(L.Callback):
    """Raises if any module is in train mode during validation or test (see module docstring)."""

    def __init__(self) -> None:
        self._reported: set[str] = set()

    def _report_once(self, phase: str, pl_module: L.LightningModule) -> None:
        if phase in self._reported:
            return
        self._reported.add(phase)
        net = getattr(pl_module, "net", pl_module)
        listing = ", ".join(f"{name}={mode}" for name, mode in modes(net).items())
        rank_zero_info(f"reglab mode audit ({phase}): {listing}")

    def _check(self, stage: str, pl_module: L.LightningModule, batch_idx: int) -> None:
        if batch_idx != 0:
            return
        self._report_once("evaluation", pl_module)
        net = getattr(pl_module, "net", pl_module)
        training = [name for name, mode in modes(net).items() if mode == "train"]
        if training:
            raise RuntimeError(
                f"{stage} ran with modules in train mode (dropout on / BatchNorm updating): "
                + ", ".join(training)
            )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Report the training-time modes once."""
        self._report_once("training", pl_module)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Audit the first validation batch of the epoch."""
        self._check("validation", pl_module, batch_idx)

    def on_test_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Audit the first test batch."""
        self._check("test", pl_module, batch_idx)
