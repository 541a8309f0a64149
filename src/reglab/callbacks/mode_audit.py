"""Checks that evaluation really runs in eval mode; driven by `callbacks` (on by default).

It does not change training. At the first batch of every validation and test epoch it asserts that
no module of the model is in train mode: dropout off, BatchNorm on its running statistics. (MC
dropout switches dropout on only inside its own extra passes, so it passes the audit too.) Once
per run, a resumed run included, it says so in one line (`eval mode ok: 2 dropout, 1 batchnorm`)
and writes the mode of every module during training and during evaluation to train.log. The check
costs one walk over the modules per evaluation epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import RunningStage
from typing_extensions import override

from reglab import log
from reglab.nn.modes import batchnorm_modules, dropout_modules, modes


class EvalModeAudit(L.Callback):
    """Raises if any module is in train mode during validation or test (see module docstring)."""

    def __init__(self) -> None:
        self.reported: set[str] = set()  # the phases whose modes were logged

    def _report_once(self, phase: str, pl_module: L.LightningModule) -> None:
        if phase in self.reported:
            return
        self.reported.add(phase)
        net = getattr(pl_module, "net", pl_module)
        listing = ", ".join(f"{name}={mode}" for name, mode in modes(net).items())
        log.detail(f"reglab mode audit ({phase}): {listing}")
        if phase == "evaluation":  # reached only when the check below passed
            counts = f"{len(dropout_modules(net))} dropout, {len(batchnorm_modules(net))} batchnorm"
            log.info(f"reglab: eval mode ok: {counts}")

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._report_once("training", pl_module)

    @override
    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0:
            return
        net = getattr(pl_module, "net", pl_module)
        training = [name for name, mode in modes(net).items() if mode == "train"]
        if training:
            stage = "test" if trainer.state.stage == RunningStage.TESTING else "validation"
            raise RuntimeError(
                f"{stage} ran with modules in train mode (dropout on / BatchNorm updating): "
                + ", ".join(training)
            )
        self._report_once("evaluation", pl_module)

    on_test_batch_start = on_validation_batch_start

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"reported": sorted(self.reported)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reported = set(state_dict["reported"])
