"""Weight initialization schemes for Linear and convolution layers, chosen by `model.init`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from reglab.errors import ConfigError

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _lecun_normal(weight: torch.Tensor) -> None:
    # N(0, 1/fan_in): the initialization under which SELU nets self-normalize.
    fan_in = weight[0].numel()
    nn.init.normal_(weight, mean=0.0, std=1.0 / math.sqrt(fan_in))


INIT_SCHEMES: dict[str, Callable[[torch.Tensor], None] | None] = {
    "default": None,  # keep torch's own initialization
    "lecun_normal": _lecun_normal,
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "xavier_uniform": nn.init.xavier_uniform_,
}


def init_weights(net: nn.Module, scheme: str) -> None:
    """Re-initialize every Linear/Conv weight of `net` with `scheme` (biases to zero)."""
    if scheme not in INIT_SCHEMES:
        raise ConfigError(
            "model.init", f"unknown init scheme {scheme!r}; valid: {', '.join(INIT_SCHEMES)}"
        )
    fill = INIT_SCHEMES[scheme]
    if fill is None:
        return
    for module in net.modules():
        if isinstance(module, _WEIGHTED):
            fill(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
