"""The gated block of the CGCNN note: one half of a linear map gates the other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reglab.nn.registry import layer


# Kind "linear": it takes the place of a Linear layer (in_features -> out_features), gate included.
@layer("gated", infer=lambda shape: {"in_features": shape[-1]}, kind="linear")
class GatedLinear(nn.Module):
    """Linear(in, 2*out) -> BatchNorm1d(2*out) -> chunk -> sigmoid(filter) * softplus(core)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.fc_full = nn.Linear(in_features, 2 * out_features, bias=bias)
        self.bn = nn.BatchNorm1d(2 * out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate: BatchNorm over a (N*, 2*out) view as in CGCNN, then filter/core halves."""
        gated = self.fc_full(x)
        gated = self.bn(gated.reshape(-1, gated.shape[-1])).reshape(gated.shape)
        nbr_filter, nbr_core = gated.chunk(2, dim=-1)
        return torch.sigmoid(nbr_filter) * F.softplus(nbr_core)
