"""Weight initialization schemes for Linear and convolution layers, chosen by the model's `init`.

A scheme is one entry of `INIT_SCHEMES`: a function applied to every Linear/Conv module of the
net. `weight_scheme(fill)` makes one from a weight initializer (biases are set to zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from reglab.registry import Registry

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)

INIT_SCHEMES: Registry[Callable[[nn.Module], None]] = Registry("init scheme")


def weight_scheme(fill: Callable[[torch.Tensor], object]) -> Callable[[nn.Module], None]:
    """A scheme that fills each weight with `fill` and sets each bias to zero."""

    def initialize(module: nn.Module) -> None:
        fill(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    return initialize


def lecun_normal(weight: torch.Tensor) -> None:
    """N(0, 1/fan_in): the initialization under which SELU nets self-normalize."""
    fan_in = weight[0].numel()
    nn.init.normal_(weight, mean=0.0, std=1.0 / math.sqrt(fan_in))


def keep_default(module: nn.Module) -> None:
    """Keep torch's own initialization (weights and biases as constructed)."""


INIT_SCHEMES.register("default", keep_default)
INIT_SCHEMES.register("lecun_normal", weight_scheme(lecun_normal))
INIT_SCHEMES.register(
    "kaiming_normal", weight_scheme(lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
)
INIT_SCHEMES.register("xavier_uniform", weight_scheme(nn.init.xavier_uniform_))


def init_weights(net: nn.Module, scheme: str) -> None:
    """Re-initialize every Linear/Conv module of `net` with `scheme` (ConfigError on key `init`)."""
    initialize = INIT_SCHEMES.get(scheme, "init")
    for module in net.modules():
        if isinstance(module, WEIGHTED):
            initialize(module)
