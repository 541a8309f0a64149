"""Changes `p` of every dropout layer once per epoch; driven by `dropout=schedule`.

Schedules: constant (p), linear (p_start -> p_end over `epochs`), step (p times gamma every
`step_size` epochs), early (p for the first `switch_epoch` epochs, then 0: "early dropout"),
late (0 until `switch_epoch`, then p: "late dropout"). Every module deriving from `_DropoutNd`
(Dropout, Dropout2d, Dropout3d, AlphaDropout) is set. Logs `dropout/p` each epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from reglab.errors import ConfigError

SCHEDULES = ("constant", "linear", "step", "early", "late")


def dropout_modules(module: nn.Module) -> list[_DropoutNd]:
    """Every dropout layer (anything deriving from torch's `_DropoutNd`) in `module`."""
    return [m for m in module.modules() if isinstance(m, _DropoutNd)]


def check_probability(key: str, value: Any) -> float:
    """`value` as a float in [0, 1), else a ConfigError naming `key`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ConfigError(key, f"must be a probability in [0, 1), got {value!r}")
    return float(value)


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
        if schedule not in SCHEDULES:
            raise ConfigError(
                "dropout.schedule", f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}"
            )
        self.p = check_probability("dropout.p", p)
        self.p_start = check_probability("dropout.p_start", p_start)
        self.p_end = check_probability("dropout.p_end", p_end)
        for key, value in (("epochs", epochs), ("step_size", step_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dropout.{key}", f"must be an integer >= 1, got {value!r}")
        if not isinstance(switch_epoch, int) or switch_epoch < 0:
            raise ConfigError(
                "dropout.switch_epoch", f"must be an integer >= 0, got {switch_epoch!r}"
            )
        if not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
            raise ConfigError("dropout.gamma", f"must be in [0, 1], got {gamma!r}")
        self.schedule, self.epochs, self.step_size = schedule, epochs, step_size
        self.gamma, self.switch_epoch = float(gamma), switch_epoch

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
        for module in dropout_modules(pl_module):
            module.p = p
        pl_module.log("dropout/p", p, on_step=False, on_epoch=True)
