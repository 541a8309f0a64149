"""Cutout (DeVries & Taylor 2017): one or more squares of each image set to zero.

As the paper's code (github.com/uoguelph-mlrg/Cutout, util/cutout.py) does: for each hole a
centre (y, x) is drawn uniformly over the image's pixels, and rows clip(y - size // 2, 0, H) up
to clip(y + size // 2, 0, H) (exclusive) by the same columns are zeroed in every channel. A centre
near the border leaves part of the square outside the image, so fewer pixels are cut there; an
odd `size` cuts size - 1 pixels a side (the code's `length // 2` twice). The paper applies it
after normalization, as here (batches are standardized: zero is the mean colour). Sizes of the
paper: 16 for CIFAR-10, 8 for CIFAR-100, 20 for SVHN. Registered as the op `cutout`; centres come
from torch's global generator on the CPU (`reglab.callbacks.RandomState` checkpoints it).
"""

from __future__ import annotations

import torch
from torch import nn

from reglab import checks
from reglab.augment.ops import Shape, op


class Cutout(nn.Module):
    """Zero `holes` squares of side `size` per image, each at a uniformly random centre."""

    def __init__(self, size: int, holes: int = 1) -> None:
        super().__init__()
        self.size = size
        self.holes = holes

    def mask(
        self, count: int, height: int, width: int, device: torch.device | None = None
    ) -> torch.Tensor:
        """(count, H, W) booleans on `device`, True where a hole cuts: centres drawn on the CPU."""
        cy = torch.randint(height, (count, self.holes, 1)).to(device)
        cx = torch.randint(width, (count, self.holes, 1)).to(device)
        half = self.size // 2
        rows, columns = torch.arange(height, device=device), torch.arange(width, device=device)
        in_rows = (rows >= cy - half) & (rows < cy + half)  # (count, holes, H)
        in_columns = (columns >= cx - half) & (columns < cx + half)
        return (in_rows[..., :, None] & in_columns[..., None, :]).any(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The batch (N, C, H, W) with its holes zeroed."""
        cut = self.mask(len(x), x.shape[-2], x.shape[-1], x.device)
        return x.masked_fill(cut[:, None], 0)


@op("cutout", needs_images=True)
def cutout(input_shape: Shape, size: int = 16, holes: int = 1) -> nn.Module:
    """Cutout: `holes` squares of side `size` zeroed per image (DeVries & Taylor's code)."""
    return Cutout(checks.integer("size", size, 1), checks.integer("holes", holes, 1))
