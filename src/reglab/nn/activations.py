"""Activations torch does not ship as a module: Swish with a fixed or learnable beta."""

from __future__ import annotations

import torch
from torch import nn

from reglab.nn.registry import layer


@layer("swish", kind="activation")
class Swish(nn.Module):
    """Swish: x * sigmoid(beta * x); beta = 1 is SiLU. `learnable=True` makes beta a parameter."""

    def __init__(self, beta: float = 1.0, learnable: bool = False) -> None:
        super().__init__()
        beta_tensor = torch.tensor(float(beta))
        if learnable:
            self.beta = nn.Parameter(beta_tensor)
        else:
            self.register_buffer("beta", beta_tensor)
        self.learnable = learnable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply x * sigmoid(beta * x)."""
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        """Show beta and whether it is learned in `print(model)`."""
        return f"beta={float(self.beta.detach()):g}, learnable={self.learnable}"
