"""Stacked forms of the layers without parameters or state: activations, pooling, flatten, ...

They have nothing per member, so one copy of the member's layer serves all members. Elementwise
layers (ReLU, GELU, Tanh, ...) take [K, B, ...] as it is. Layers that work sample by sample but
read the input's dimensions (softmax over `dim`, pooling, flatten, upsampling, pooling over steps)
see the K*B samples as one batch of the member's shape (`merged`), so `dim`, `start_dim` and
no-batch conventions mean what they mean to the member. The members must show equal settings.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from reglab.nn.sequence import SequencePool
from reglab.stack.layers import NotStackable, describe, merged, same_settings, stacker

ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Sigmoid, nn.LogSigmoid, nn.Tanh, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink,
    nn.Threshold,
)  # fmt: skip

PER_SAMPLE = (
    nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d, nn.GLU, nn.Flatten, nn.Unflatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
    nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, SequencePool,
)  # fmt: skip


def _shared_copy(members: list[nn.Module], path: str) -> nn.Module:
    first = members[0]
    if next(first.parameters(), None) is not None or next(first.buffers(), None) is not None:
        raise NotStackable(f"{path} ({describe(type(first))}) holds parameters or buffers")
    if getattr(first, "return_indices", False):
        raise NotStackable(f"{path} ({describe(type(first))}) returns indices besides its output")
    same_settings(members, path)
    return copy.deepcopy(first)


@stacker(*ELEMENTWISE)
def elementwise(members: list[nn.Module], path: str) -> nn.Module:
    """One copy of the member's layer, applied to [K, B, ...] as it is."""
    return _shared_copy(members, path)


class PerSample(nn.Module):
    """The member's `layer` applied to the K*B samples of [K, B, ...] as one batch."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        """[K, B, ...] -> [K, B, ...], each sample through the member's layer."""
        return merged(x, self.layer)


@stacker(*PER_SAMPLE)
def per_sample(members: list[nn.Module], path: str) -> nn.Module:
    """The member's layer over the merged K*B samples."""
    return PerSample(_shared_copy(members, path))
