"""Checks that evaluation really runs in eval mode; driven by `callbacks` (on by default).

It does not change training. At the first batch of every validation and test epoch it asserts that
no module of the model is in train mode: dropout off (Dropout layers, DropPath, LSTM/GRU dropout
between layers, attention dropout; a TransformerEncoderLayer on its deterministic fast path),
BatchNorm on its running statistics. (MC dropout switches dropout on only inside its own extra
passes, so it passes the audit too.) Once per run, a resumed run included, it says so in one line
that counts what it checked: `eval mode ok: 2 dropout, 1 batchnorm`, with the other dropout kinds
(`reglab.nn.modes.CARRIERS`) only where the net has them (`eval mode ok: 3 dropout, 2 attention,
1 recurrent, 0 batchnorm`); a sweep job or search trial logs it to train.log only. It writes
the mode of every module during training and during evaluation to train.log. The check costs
one walk over the modules per evaluation epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import RunningStage
from torch import nn
from typing_extensions import override

from reglab import log
from reglab.nn.modes import batchnorm_modules, carrier_counts, modes


def audit_counts(net: nn.Module) -> str:
    """What the audit checked, as '3 dropout, 2 attention, 1 recurrent, 0 batchnorm': Dropout
    layers and BatchNorm always, the other dropout kinds where the net has them."""
    counts = carrier_counts(net)
    kinds = [f"{counts.pop('dropout')} dropout"]
    kinds += [f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n]
    return ", ".join([*kinds, f"{len(batchnorm_modules(net))} batchnorm"])


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
            log.run_info(f"reglab: eval mode ok: {audit_counts(net)}")

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
