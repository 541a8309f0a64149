"""Ops that act on pixel intensities in [0, 1], run on batches the net sees standardized.

kornia's colour and policy ops (RandAugment, TrivialAugment: solarize, posterize, equalize, ...)
and the papers' zero padding of the crop (a black border, as torchvision's `RandomCrop(32,
padding=4)` pads the picture before `ToTensor` and `Normalize`) are defined on intensities in
[0, 1]. reglab's photo data sets (data=cifar10, cifar100, svhn: bytes on the device) hand the
net (byte - mean) / std per channel, so such an op is wrapped in `InPixels`: the batch is mapped
to intensities, x * std / 255 + mean / 255 (clipped to [0, 1]), the op runs, its result is clipped
to [0, 1] and mapped back. `PixelMap.of(datamodule)` reads the map from a data module that holds
bytes; `reglab.callbacks.BatchAugmentation` binds it to every `InPixels` of its ops when training
starts, and refuses such ops on data of unknown pixel range (features, 8x8 digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class PixelMap:
    """intensity = x * scale + shift, per channel (tensors broadcasting against (N, C, H, W))."""

    scale: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def of(cls, datamodule: Any) -> PixelMap | None:
        """The map of a data module that holds bytes (`byte_inputs`, `byte_moments`), else None."""
        moments = getattr(datamodule, "byte_moments", None)
        if not getattr(datamodule, "byte_inputs", False) or moments is None:
            return None
        return cls.of_bytes(*moments)

    @classmethod
    def of_bytes(cls, mean: Any, std: Any) -> PixelMap:
        """The map of batches computed as (byte - mean) / std (per channel or scalars)."""
        mean, std = (torch.as_tensor(m, dtype=torch.float32) for m in (mean, std))
        if mean.ndim == 1:  # one value per channel
            mean, std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        return cls(scale=std / 255, shift=mean / 255)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as intensities in [0, 1]."""
        scale, shift = self.on(x)
        return (x * scale + shift).clamp(0, 1)

    def from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Intensities (clipped to [0, 1]) back as the values the net sees."""
        scale, shift = self.on(pixels)
        return (pixels.clamp(0, 1) - shift) / scale

    def on(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scale and shift on x's device and dtype."""
        return self.scale.to(x.device, x.dtype), self.shift.to(x.device, x.dtype)


class InPixels(nn.Module):
    """Runs `op` on the batch as intensities in [0, 1] (see the module docstring).

    `pixels` is bound before the first batch (`BatchAugmentation` does it from the data module).
    """

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op
        self.pixels: PixelMap | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The batch with `op` applied to its intensities."""
        if self.pixels is None:
            raise RuntimeError(
                "InPixels: bind `pixels` (a PixelMap) first; BatchAugmentation does it at setup"
            )
        return self.pixels.from_pixels(self.op(self.pixels.to_pixels(x)))


class PerGroup(nn.Module):
    """Runs `op` on `groups` consecutive slices of the batch, each with its own draw.

    kornia's RandAugment and TrivialAugment choose their operations once per call, the same for
    every image of the call; the papers choose them per image. Slicing the batch gives each slice
    its own choice, at the cost of one call per slice.
    """

    def __init__(self, op: nn.Module, groups: int) -> None:
        super().__init__()
        self.op = op
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The batch, each slice transformed by its own call of `op`."""
        return torch.cat([self.op(part) for part in x.chunk(self.groups)])
