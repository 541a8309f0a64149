"""Residual blocks: the spec entry `{residual: [...layers...], drop_path: p}` adds a block's input to
its output, as ResNet's skip connections do.

The block may change the channel count (images) or the feature count (features, sequences): the
skip is then a learned projection, a 1x1 convolution or a Linear map without bias (ResNet's option
B). It may not change the spatial size or the number of steps: the builder refuses such a block
with a one-line error naming its spec entry. `drop_path` puts a DropPath on the branch before the
addition (stochastic depth, as timm does), so a sample sometimes skips the whole block.
"""

from __future__ import annotations

from torch import Tensor, nn

from reglab.errors import ConfigError
from reglab.nn.drop_path import DropPath
from reglab.nn.registry import Shape


class Residual(nn.Module):
    """shortcut(x) + drop_path(block(x)); the shortcut and drop path are identities by default."""

    def __init__(
        self, block: nn.Module, shortcut: nn.Module | None = None, drop_path: float | None = None
    ) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """The block's output plus its (projected) input."""
        return self.shortcut(x) + self.drop_path(self.block(x))


def projection(in_shape: Shape, out_shape: Shape) -> nn.Module | None:
    """The skip's projection for a block mapping `in_shape` to `out_shape` (no batch dimension):
    None when they are equal. ConfigError (key "") when the block changes more than the channel
    count (first dim of images and volumes) or the feature count (last dim of features and
    sequences)."""
    if in_shape == out_shape:
        return None
    channels_first = len(in_shape) >= 3  # (C, H, W), (C, D, H, W); else (F,) or (T, F)
    kept_in, kept_out = (
        (in_shape[1:], out_shape[1:]) if channels_first else (in_shape[:-1], out_shape[:-1])
    )
    if len(in_shape) != len(out_shape) or kept_in != kept_out or len(in_shape) > 4:
        what = "spatial size" if channels_first else "number of steps"
        if len(in_shape) != len(out_shape):
            what = "number of dimensions"
        raise ConfigError(
            "",
            f"the block changes its input's shape {in_shape} to {out_shape}; a residual block may "
            f"change the channel or feature count only, not the {what}: move pooling and strides "
            "out of the block",
        )
    if not channels_first:
        return nn.Linear(in_shape[-1], out_shape[-1], bias=False)
    conv = nn.Conv2d if len(in_shape) == 3 else nn.Conv3d
    return conv(in_shape[0], out_shape[0], kernel_size=1, bias=False)
