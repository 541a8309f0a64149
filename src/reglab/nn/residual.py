"""Residual blocks: the spec entry `{residual: [...layers...], drop_path: p}` adds a block's input to
its output, as ResNet's skip connections do.

The block may change the channel count (images) or the feature count (features, sequences): the
skip is then a learned projection, a 1x1 convolution or a Linear map without bias (ResNet's option
B). It may not change the spatial size or the number of steps: the builder refuses such a block
with a one-line error naming its spec entry. `drop_path` puts a DropPath on the branch before the
addition (stochastic depth, as timm does), so a sample sometimes skips the whole block.

`{preact_residual: [...], pre: [batch_norm2d, relu]}` is He et al. 2016's pre-activation unit
(PreActResNet, Wide ResNet): the `pre` layers run on the input and feed the branch; the skip is the
input itself when the branch keeps its shape, else a 1x1 projection of the pre-activated input,
which may also stride: the branch may shrink an image's spatial size by an integer stride s
(a strided first convolution), the projection then strides by s.
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


class PreActResidual(nn.Module):
    """shortcut + drop_path(block(pre(x))): the shortcut is x, or a projection of pre(x) when given.

    Modules are registered in the order they run (pre, block, shortcut), as the reference
    PreActBlock registers bn1, conv1, bn2, conv2, shortcut.
    """

    def __init__(
        self,
        pre: nn.Module,
        block: nn.Module,
        shortcut: nn.Module | None = None,
        drop_path: float | None = None,
    ) -> None:
        super().__init__()
        self.pre = pre
        self.block = block
        self.shortcut = shortcut
        self.drop_path = DropPath(drop_path) if drop_path is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """The branch on the pre-activated input plus the input (or its projection)."""
        activated = self.pre(x)
        skip = x if self.shortcut is None else self.shortcut(activated)
        return skip + self.drop_path(self.block(activated))


def projection(in_shape: Shape, out_shape: Shape, *, strided: bool = False) -> nn.Module | None:
    """The skip's projection for a block mapping `in_shape` to `out_shape` (no batch dimension):
    None when they are equal. ConfigError (key "") when the block changes more than the channel
    count (first dim of images and volumes) or the feature count (last dim of features and
    sequences) — with `strided`, an image's or volume's spatial size may also shrink by an
    integer stride s (out = ceil(in / s) in every spatial dimension, as a strided 3x3 convolution
    with padding 1 gives): the 1x1 projection then strides by s."""
    if in_shape == out_shape:
        return None
    channels_first = len(in_shape) >= 3  # (C, H, W), (C, D, H, W); else (F,) or (T, F)
    kept_in, kept_out = (
        (in_shape[1:], out_shape[1:]) if channels_first else (in_shape[:-1], out_shape[:-1])
    )
    same_ndim = len(in_shape) == len(out_shape) and len(in_shape) <= 4
    stride = _stride(kept_in, kept_out) if strided and channels_first and same_ndim else 1
    if not same_ndim or stride is None or (stride == 1 and kept_in != kept_out):
        what = "spatial size" if channels_first else "number of steps"
        if len(in_shape) != len(out_shape):
            what = "number of dimensions"
        allowed = (
            "the channel count, and shrink the spatial size by an integer stride s "
            "(out = ceil(in / s)), only"
            if strided
            else f"the channel or feature count only, not the {what}: move pooling and strides "
            "out of the block"
        )
        raise ConfigError(
            "",
            f"the block changes its input's shape {in_shape} to {out_shape}; a residual block may "
            f"change {allowed}",
        )
    if not channels_first:
        return nn.Linear(in_shape[-1], out_shape[-1], bias=False)
    conv = nn.Conv2d if len(in_shape) == 3 else nn.Conv3d
    return conv(in_shape[0], out_shape[0], kernel_size=1, stride=stride, bias=False)


def _stride(size_in: Shape, size_out: Shape) -> int | None:
    """The smallest stride s with ceil(i / s) = o for every spatial size i -> o; None if none."""
    if size_in == size_out:
        return 1
    for stride in range(2, max(size_in, default=1) + 1):
        if all(-(-i // stride) == o for i, o in zip(size_in, size_out, strict=True)):
            return stride
    return None
