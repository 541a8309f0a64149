"""Mixing ops: a batch mixed with a permutation of itself, targets made soft alike.

Written here rather than taken from kornia, which draws lambda uniformly: as in the mixup and
CutMix papers, lambda ~ Beta(alpha, alpha), one per batch. Targets are class probabilities (the
caller turns labels into one-hot rows first); the result's rows still sum to one. Randomness comes
from torch's seeded global generator, on the batch's device. `MIXES` holds them as `Op` entries
(the same table entry as per-sample ops) whose module is a `Mixing`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from reglab import checks
from reglab.augment.ops import Op, Shape
from reglab.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
Combine = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor], Batch]

# Beta(alpha, alpha) needs alpha > 0; below this lambda is 0 or 1 to float precision: no mixing.
MIN_ALPHA = 1e-3


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> Batch:
    """lam * (x, y) + (1 - lam) * (x[perm], y[perm]); y as probabilities."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> Batch:
    """Paste a box of x[perm] covering about 1 - lam of the image; y mixed by the exact area."""
    height, width = x.shape[-2:]
    cut = (1 - lam) ** 0.5
    box_h, box_w = round(height * cut), round(width * cut)
    cy, cx = int(torch.randint(height, (1,))), int(torch.randint(width, (1,)))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    # The box is clipped at the borders: the targets follow the area actually pasted.
    kept = 1 - (bottom - top) * (right - left) / (height * width)
    return mixed, kept * y + (1 - kept) * y[perm]


class Mixing(nn.Module):
    """`combine(x, y, lambda, perm)` with lambda ~ Beta(alpha, alpha) and a random permutation."""

    def __init__(self, combine: Combine, alpha: float) -> None:
        super().__init__()
        self.combine = combine
        self.alpha = alpha

    def sample_lambda(self) -> float:
        """lambda ~ Beta(alpha, alpha), as in the mixup and CutMix papers (kornia: uniform)."""
        return float(torch.distributions.Beta(self.alpha, self.alpha).sample())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """The mixed inputs and soft targets (`y`: class probabilities, one row per sample)."""
        perm = torch.randperm(len(x), device=x.device)
        return self.combine(x, y, self.sample_lambda(), perm)


MIXES: Registry[Op] = Registry("mixing op")


def _alpha(alpha: float) -> float:
    return checks.number("alpha", alpha, MIN_ALPHA)


def build_mixup(input_shape: Shape, alpha: float = 0.2) -> Mixing:
    """Mixup (Zhang et al.): convex combinations of two samples and of their targets."""
    return Mixing(mixup, _alpha(alpha))


def build_cutmix(input_shape: Shape, alpha: float = 1.0) -> Mixing:
    """CutMix (Yun et al.): a box of another image pasted in, targets mixed by its area."""
    return Mixing(cutmix, _alpha(alpha))


MIXES.register("mixup", Op(build_mixup))
MIXES.register("cutmix", Op(build_cutmix, needs_images=True))
