"""Why Lightning's EarlyStopping ended a run, in a few words for the console and metrics.json.

Lightning records the reason (`EarlyStopping.stopping_reason`) and logs its own message only with
`verbose=True`, which also prints a line at every improvement; reglab keeps `verbose: false` and
says once, at the end, why the run stopped (`reglab.run`).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason


def _patience(stopper: EarlyStopping, trainer: L.Trainer) -> str:
    # `patience` counts validation checks: epochs when validation runs once an epoch.
    once_an_epoch = trainer.check_val_every_n_epoch == 1 and trainer.val_check_interval == 1.0
    unit = "epoch" if once_an_epoch else "validation check"
    count = stopper.wait_count
    by = f" by more than {abs(stopper.min_delta):g}" if stopper.min_delta else ""
    return f"{stopper.monitor} did not improve{by} for {count} {unit}{'' if count == 1 else 's'}"


# The reason's words by Lightning's EarlyStoppingReason.
REASONS: dict[EarlyStoppingReason, Callable[[EarlyStopping, L.Trainer], str]] = {
    EarlyStoppingReason.PATIENCE_EXHAUSTED: _patience,
    EarlyStoppingReason.STOPPING_THRESHOLD: lambda stopper, _: (
        f"{stopper.monitor} reached the stopping threshold {stopper.stopping_threshold:g}"
    ),
    EarlyStoppingReason.DIVERGENCE_THRESHOLD: lambda stopper, _: (
        f"{stopper.monitor} passed the divergence threshold {stopper.divergence_threshold:g}"
    ),
    EarlyStoppingReason.NON_FINITE_METRIC: lambda stopper, _: f"{stopper.monitor} is not finite",
}


def stopping_reason(stopper: EarlyStopping | None, trainer: L.Trainer) -> str | None:
    """Why `stopper` stopped training (None if it did not): `val/loss did not improve for 5
    epochs`. A reason this module does not know is given in Lightning's own words."""
    if stopper is None or stopper.stopping_reason == EarlyStoppingReason.NOT_STOPPED:
        return None
    words = REASONS.get(stopper.stopping_reason)
    if words is not None:
        return words(stopper, trainer)
    message = stopper.stopping_reason_message or str(stopper.stopping_reason.name).lower()
    return message.replace(" Signaling Trainer to stop.", "")
