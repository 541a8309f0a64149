"""Stacked activations with per-member values: PReLU's slopes and Swish's beta, as [K, ...] tensors.

The activations without parameters are shared by all members (reglab.stack.shared).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reglab.nn.activations import Swish
from reglab.stack.layers import same_settings, stack_parameter, stack_tensors, stacker


class StackedPReLU(nn.Module):
    """K PReLU layers: `weight` [K, num_parameters], one slope per channel (dim 1 of the member's
    input) or one for all."""

    def __init__(self, members: list[nn.PReLU], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        self.num_parameters = members[0].num_parameters
        self.weight = stack_parameter(members, "weight", path)

    def forward(self, x: Tensor) -> Tensor:
        """x where x > 0, else member k's slope times x."""
        members = self.weight.shape[0]
        if self.num_parameters == 1:
            slope = self.weight.reshape(members, *([1] * (x.ndim - 1)))
        else:
            slope = self.weight.reshape(members, 1, -1, *([1] * (x.ndim - 3)))
        return torch.where(x > 0, x, slope * x)


class StackedSwish(nn.Module):
    """K Swish layers: beta [K] (a parameter if learnable, else a buffer)."""

    def __init__(self, members: list[Swish], path: str) -> None:
        super().__init__()
        self.learnable = members[0].learnable
        if self.learnable:
            self.beta = stack_parameter(members, "beta", path)
        else:
            self.register_buffer("beta", stack_tensors(members, "beta", path))

    def forward(self, x: Tensor) -> Tensor:
        """x * sigmoid(beta_k * x) for member k."""
        beta = self.beta.reshape(-1, *([1] * (x.ndim - 1)))
        return x * torch.sigmoid(beta * x)


stacker(nn.PReLU)(StackedPReLU)
stacker(Swish)(StackedSwish)
