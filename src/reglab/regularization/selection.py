"""Which parameters a penalty applies to, and with which strength.

Default: weight matrices and kernels (ndim > 1); biases and normalization parameters are left
alone. `include` / `exclude` are glob patterns on parameter names (as in `named_parameters()`,
e.g. `net.head.*`); `strengths` maps patterns to their own strength, like Keras' per-layer
regularizers (the first matching pattern wins).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import torch
from torch import nn

from reglab import checks
from reglab.errors import ConfigError


@dataclass
class PenaltyGroup:
    """Parameters that share one strength."""

    strength: float
    names: list[str] = field(default_factory=list)
    params: list[torch.Tensor] = field(default_factory=list)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def select_parameters(
    module: nn.Module,
    strength: float,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    strengths: dict[str, float] | None = None,
) -> list[PenaltyGroup]:
    """Group the penalized parameters of `module` by strength."""
    include, exclude, strengths = list(include or []), list(exclude or []), dict(strengths or {})
    groups: dict[float, PenaltyGroup] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        chosen = _matches(name, include) if include else param.ndim > 1
        if not chosen or _matches(name, exclude):
            continue
        pattern = next((p for p in strengths if fnmatch.fnmatchcase(name, p)), None)
        key = "strength" if pattern is None else f"strengths.{pattern}"
        own = checks.number(key, strength if pattern is None else strengths[pattern], 0.0)
        group = groups.setdefault(own, PenaltyGroup(own))
        group.names.append(name)
        group.params.append(param)
    if not groups:
        raise ConfigError(
            "include",
            f"selects no parameter; names look like: {', '.join(n for n, _ in module.named_parameters())}",
        )
    return list(groups.values())
