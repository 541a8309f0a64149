"""Carries the random-number state through checkpoints, so a resumed run draws what the
uninterrupted run would have drawn (dropout masks, augmentation, mixing); added by `reglab.run`.

It does not change training. Every checkpoint stores the Python, NumPy, torch CPU and CUDA
generator states of the moment it is written; a resumed run sets them back when training starts
again, after the sanity check (whose evaluation may draw, e.g. MC dropout) and before the first
batch. The batch order needs nothing: the loaders shuffle with their own per-epoch generator.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from typing_extensions import override


def current_states() -> dict[str, Any]:
    """The state of every generator training draws from, as tensors and plain Python values.

    (Checkpoints are read with torch.load(weights_only=True): no NumPy arrays in them.)
    """
    name, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_states(states: dict[str, Any]) -> None:
    """Set every generator back to `states` (those of `current_states`)."""
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    # CUDA states only onto as many devices as saved them (a resume may see other GPUs).
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomState(L.Callback):
    """Saves the generators' states in every checkpoint and restores them when training resumes."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return current_states()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before the sanity check: apply the states only after it.
        self._pending = state_dict

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_states(self._pending)
            self._pending = None
