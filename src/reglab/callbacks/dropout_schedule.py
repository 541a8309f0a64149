"""Changes `p` of every dropout layer once per epoch; driven by `dropout=schedule`.

Schedules: constant (p), linear (p_start -> p_end over `epochs`), step (p times gamma every
`step_size` epochs), early (p for the first `switch_epoch` epochs, then 0: "early dropout"),
late (0 until `switch_epoch`, then p: "late dropout"). Every module deriving from `_DropoutNd`
(Dropout, Dropout2d, Dropout3d, AlphaDropout) is set. Logs `dropout/p` each epoch.
"""

from __future__ import annotations

import lightning as L
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from reglab import checks
from reglab.errors import ConfigError

SCHEDULES = ("constant", "linear", "step", "early", "late")


def dropout_modules(module: nn.Module) -> list[_DropoutNd]:
    """Every dropout layer (anything deriving from torch's `_DropoutNd`) in `module`."""
    return [m for m in module.modules() if isinstance(m, _DropoutNd)]


def set_dropout_p(module: nn.Module, p: float) -> None:
    """Set p of every dropout layer in `module`."""
    for layer in dropout_modules(module):
        layer.p = p


class DropoutSchedule(L.Callback):
    """Sets p of every dropout layer from the epoch number (see module docstring)."""

    def __init__(
        self,
        schedule: str = "constant",
        p: float = 0.5,
        p_start: float = 0.0,
        p_end: float = 0.5,
        epochs: int = 10,
        step_size: int = 5,
        gamma: float = 0.5,
        switch_epoch: int = 5,
    ) -> None:
        self.schedule = checks.choice("dropout.schedule", schedule, SCHEDULES)
        self.p = checks.probability("dropout.p", p, allow_one=False)
        self.p_start = checks.probability("dropout.p_start", p_start, allow_one=False)
        self.p_end = checks.probability("dropout.p_end", p_end, allow_one=False)
        self.epochs = checks.integer("dropout.epochs", epochs, minimum=1)
        self.step_size = checks.integer("dropout.step_size", step_size, minimum=1)
        self.gamma = checks.number("dropout.gamma", gamma, 0.0, 1.0)
        self.switch_epoch = checks.integer("dropout.switch_epoch", switch_epoch)

    def p_at(self, epoch: int) -> float:
        """The dropout probability for `epoch` (0-based)."""
        if self.schedule == "constant":
            return self.p
        if self.schedule == "linear":
            progress = min(1.0, epoch / max(1, self.epochs - 1))
            return self.p_start + progress * (self.p_end - self.p_start)
        if self.schedule == "step":
            return self.p * self.gamma ** (epoch // self.step_size)
        if self.schedule == "early":
            return self.p if epoch < self.switch_epoch else 0.0
        return 0.0 if epoch < self.switch_epoch else self.p  # late

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a model without dropout layers: the schedule would do nothing."""
        if not dropout_modules(pl_module):
            raise ConfigError("dropout", "the model has no dropout layer for the schedule to set")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Set this epoch's p on every dropout layer and log it."""
        p = self.p_at(trainer.current_epoch)
        set_dropout_p(pl_module, p)
        pl_module.log("dropout/p", p, on_step=False, on_epoch=True)
