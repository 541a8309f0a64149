"""Stochastic depth (Huang et al. 2016), as timm's DropPath: drop a residual branch per sample.

In training each sample's branch output is zeroed with probability `p` and the kept ones are
scaled by 1 / (1 - p), so the expected output is unchanged; in eval mode it is the identity.
`p` is a plain attribute like Dropout's, so dropout schedules and MC dropout drive it
(`reglab.nn.modes`). The residual spec entry (`{residual: [...], drop_path: 0.1}`) puts one on
the block's branch, before the skip connection is added.
"""

from __future__ import annotations

import torch
from torch import nn

from reglab import checks


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero whole samples of `x` with probability p, scale the rest by 1 / (1 - p) (training only)."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Drop the branch it wraps for a random `p` share of the samples (identity in eval mode)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = checks.probability("p", p, allow_one=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` with whole samples zeroed (training) or unchanged (eval)."""
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        """p, as Dropout shows it."""
        return f"p={self.p}"
