"""Per-epoch costs of Lightning's logging that do no work, skipped (`apply()`, called by every run).

Each `self.log(name, value)` ends in `_ResultMetric.to(value.device)`, which rebuilds the logged
metric's whole `__dict__` through `apply_to_collection` (about forty entries, its metadata
dataclass deep-copied) to move two tensors that are already on that device: about 0.5-0.7 ms per
logged value on this project's machine, 8-10 ms an epoch for reglab's 14 epoch-level values (a
hand-written epoch of the benchmark model takes 40-60 ms). `apply()` returns early from that call
when the value and its batch-size count already sit on the requested device; any other call (a
real move, a dtype, a Metric object) runs Lightning's own code.

The patch replaces a private Lightning method for the whole process, so it is contained: it is
applied only on the Lightning releases it was checked with (TESTED_LIGHTNING; any other release
runs Lightning's own method, as does one without this class), and `REGLAB_LIGHTNING_SPEEDUPS=0`
in the environment turns it off (to rule it out when chasing a logging problem).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lightning
import torch

from reglab.releases import is_tested

try:  # a Lightning internal: without it, nothing to speed up
    from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultMetric
except ImportError:  # pragma: no cover - depends on the Lightning version
    _ResultMetric = None

# Lightning's own method, kept on the class when `apply()` replaces it.
LIGHTNING_TO = "_reglab_lightning_to"
# The Lightning releases `_ResultMetric.to` was checked against (2.6.x).
TESTED_LIGHTNING = ((2, 6), (2, 7))
# `REGLAB_LIGHTNING_SPEEDUPS=0` (or false, no, off) leaves Lightning's method alone.
SWITCH = "REGLAB_LIGHTNING_SPEEDUPS"


def apply() -> None:
    """Make `_ResultMetric.to(device)` a no-op when nothing would move (idempotent), on a tested
    Lightning release unless switched off."""
    if _ResultMetric is None or hasattr(_ResultMetric, LIGHTNING_TO) or not enabled():
        return
    setattr(_ResultMetric, LIGHTNING_TO, _ResultMetric.to)
    _ResultMetric.to = skipping_same_device_moves(_ResultMetric.to)


def enabled() -> bool:
    """Whether the patch may apply: Lightning's release is a tested one and no switch is off."""
    switched_off = os.environ.get(SWITCH, "").strip().lower() in ("0", "false", "no", "off")
    return not switched_off and is_tested(lightning_version(), TESTED_LIGHTNING)


def lightning_version() -> str:
    """The installed Lightning's version."""
    return lightning.__version__


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
