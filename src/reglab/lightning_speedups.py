"""Per-epoch costs of Lightning's logging that do no work, skipped (`apply()`, called by every run).

Each `self.log(name, value)` ends in `_ResultMetric.to(value.device)`, which rebuilds the logged
metric's whole `__dict__` through `apply_to_collection` (about forty entries, its metadata
dataclass deep-copied) to move two tensors that are already on that device: about 0.5-0.7 ms per
logged value on this project's machine, 8-10 ms an epoch for reglab's 14 epoch-level values (a
hand-written epoch of the benchmark model takes 40-60 ms). `apply()` returns early from that call
when the value and its batch-size count already sit on the requested device; any other call (a
real move, a dtype, a Metric object) runs Lightning's own code. Lightning versions without this
class or method are left untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

try:  # a Lightning internal: without it, nothing to speed up
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric
except ImportError:  # pragma: no cover - depends on the Lightning version
    _ResultMetric = None

# Lightning's own method, kept on the class when `apply()` replaces it.
LIGHTNING_TO = "_reglab_lightning_to"


def apply() -> None:
    """Make `_ResultMetric.to(device)` a no-op when nothing would move (idempotent)."""
    if _ResultMetric is None or hasattr(_ResultMetric, LIGHTNING_TO):
        return
    setattr(_ResultMetric, LIGHTNING_TO, _ResultMetric.to)
    _ResultMetric.to = skipping_same_device_moves(_ResultMetric.to)


def skipping_same_device_moves(lightning_to: Callable[..., Any]) -> Callable[..., Any]:
    """`lightning_to` returning early when every tensor state is on the requested device."""

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _already_on(self.__dict__, args, kwargs):
            return self
        return lightning_to(self, *args, **kwargs)

    return to


def _already_on(state: dict[str, Any], args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether `.to(*args, **kwargs)` asks only for a device every tensor state is on."""
    if kwargs or len(args) != 1 or not isinstance(args[0], (torch.device, str)):
        return False
    device = torch.device(args[0])
    tensors = [state.get("value"), state.get("cumulated_batch_size")]
    if not isinstance(tensors[0], torch.Tensor):  # a logged Metric object: Lightning moves it
        return False
    return all(t.device == device for t in tensors if t is not None)
