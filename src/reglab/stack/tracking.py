"""One member's course through a stacked fit: its epochs, early stopping, best state, divergence.

Each member of a vectorized study keeps what its own run's callbacks keep: the history rows
(`reglab.callbacks.EpochHistory`'s, values as Lightning logs them: float32), Lightning's
`EarlyStopping` of its `early_stopping` node (the same object, fed the member's own monitored
value, so patience, min_delta, thresholds and check_finite act as in its run), and its best
state by `monitor` / `monitor_mode` (as the `model_checkpoint` callback keeps the best epoch:
strictly better, a NaN never). A member stops changing once it stops; a member whose training
loss or monitored metric is not finite fails alone (as `reglab.run` fails a diverged run).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.callbacks import EarlyStopping

from reglab.errors import TrainingDiverged


def logged(value: Any) -> float:
    """A value as Lightning's epoch logging keeps it (float32), as a Python float."""
    return float(torch.as_tensor(value).to(torch.float32))


class MemberCourse:
    """Member k's history, stopping state and best state during a stacked fit."""

    def __init__(self, monitor: str, mode: str, stopper: EarlyStopping | None) -> None:
        self.monitor, self.mode, self.stopper = monitor, mode, stopper
        self.epochs: list[dict[str, float]] = []
        self.active = True
        self.stopped_epoch: int | None = None  # counted from 1
        self.failure: Exception | None = None
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_optimizer: dict[str, Any] | None = None  # its optimizer's, in its run's layout
        self.best_scheduler: dict[str, Any] | None = None  # its scheduler's, with a scheduler
        self.best_step = 0
        self.steps: list[int] = []  # the global step at each epoch's end (TensorBoard's x-axis)
        self.final_state: dict[str, torch.Tensor] | None = None  # kept when it stops

    def row(self, epoch: int) -> dict[str, float]:
        """The history row of `epoch` (counted from 1), created when first asked for."""
        if not self.epochs or self.epochs[-1]["epoch"] != epoch:
            self.epochs.append({"epoch": epoch})
        return self.epochs[-1]

    def record(self, epoch: int, values: dict[str, Any]) -> None:
        """Merge an epoch end's logged values into its row."""
        self.row(epoch).update({name: logged(value) for name, value in values.items()})

    def improved(self, epoch: int) -> bool:
        """Whether `epoch`'s monitored value is the best so far (then the caller keeps the state)."""
        value = self.row(epoch).get(self.monitor)
        if value is None or math.isnan(value):
            return False
        better = self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value
        )
        if better:
            self.best_value, self.best_epoch = value, epoch
        return better

    def check_divergence(self, epoch: int) -> None:
        """A non-finite training loss or monitored metric fails the member (it stops here)."""
        row = self.row(epoch)
        bad = {k: row[k] for k in ("train/loss", self.monitor) if k in row}
        bad = {k: v for k, v in bad.items() if not math.isfinite(v)}
        if bad:
            what = ", ".join(f"{k} = {v}" for k, v in bad.items())
            self.failure = TrainingDiverged(
                f"training diverged at epoch {epoch} ({what}); "
                "lower optimizer.lr or the regularization strength"
            )
            self.active = False

    def check_stopping(self, epoch: int) -> None:
        """Early stopping on the epoch's monitored value, as the member's EarlyStopping decides."""
        if self.stopper is None or not self.active:
            return
        value = self.row(epoch).get(self.stopper.monitor)
        if value is None:
            return
        # Lightning's own decision (patience, min_delta, thresholds, check_finite, its reason).
        stop, _ = self.stopper._evaluate_stopping_criteria(torch.tensor(value))
        if stop:
            self.stopper.stopped_epoch = epoch - 1  # Lightning's is 0-based
            self.stopped_epoch = epoch
            self.active = False
