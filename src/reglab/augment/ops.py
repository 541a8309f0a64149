"""Per-sample batch augmentation ops: a table of small factories, one per op name.

An op is named in the `augmentation` config as a one-key mapping, `{rotation: {degrees: 10}}`;
`OPS` maps the name to an `Op`: a factory `build(input_shape, **arguments) -> nn.Module`,
whether the op needs images (C, H, W), and whether it can act on integer inputs (token ids: none
of the built-in ops can, they change values arithmetically). The module maps a batch of inputs
(N, *input_shape) to a batch of the same shape. A factory checks its own arguments (errors keyed by the argument name)
before building. An op defined in any file joins the table with one call:

    from reglab.augment import OPS, Op

    OPS.register("invert", Op(lambda input_shape, scale=-1.0: Scale(scale)))

The image ops come from kornia (imported when an op is built: it is slow to import). Ops on
pixel intensities (RandAugment, a crop padded with black) wrap their module in
`reglab.augment.pixels.InPixels`; larger ops live in their own files (`cutout.py`, `policies.py`),
registered with `op` and imported by `reglab.augment`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from reglab import checks
from reglab.augment.pixels import InPixels
from reglab.errors import ConfigError
from reglab.registry import Registry

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Op:
    """A table entry: `build(input_shape, **arguments)` returns the module.

    `needs_images`: inputs must be images (C, H, W), not features or sequences (T, F);
    `takes_tokens`: the op can act on integer inputs (token ids), which ops that add, blend or
    rotate values cannot.
    """

    build: Callable[..., nn.Module]
    needs_images: bool = False
    takes_tokens: bool = False

    def arguments(self, given: Any) -> dict:
        """`given` (a mapping or null) as the factory's keyword arguments; unknown names refused."""
        # Bind input_shape so that it is not offered as an argument a config may set.
        return checks.arguments("", partial(self.build, ()), checks.mapping("", given))


OPS: Registry[Op] = Registry("augmentation op")


def op(name: str, *, needs_images: bool = False, takes_tokens: bool = False) -> Callable:
    """Decorator registering a factory `(input_shape, **arguments) -> nn.Module` in OPS under `name`."""

    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        OPS.register(name, Op(build, needs_images, takes_tokens))
        return build

    return decorate


class GaussianNoise(nn.Module):
    """x + std * N(0, 1), drawn per element: works on any float data (images, features, sequences)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The noisy batch."""
        return x + self.std * torch.randn_like(x)


@op("flip", needs_images=True)
def flip(input_shape: Shape, p: float = 0.5) -> nn.Module:
    """Horizontal flip with probability p (a mirrored digit is another symbol: think first)."""
    import kornia.augmentation as K

    return K.RandomHorizontalFlip(p=checks.probability("p", p))


@op("rotation", needs_images=True)
def rotation(input_shape: Shape, degrees: float = 10.0) -> nn.Module:
    """Rotation by an angle uniform in [-degrees, degrees], every sample."""
    import kornia.augmentation as K

    return K.RandomRotation(degrees=checks.number("degrees", degrees, 0.0, 180.0), p=1.0)


# What `crop` pads with: zeros of the batch as the net sees it (standardized: the mean colour),
# or black pixels, as torchvision's RandomCrop pads a picture before ToTensor and Normalize.
CROP_FILLS = ("zero", "black")


@op("crop", needs_images=True)
def crop(input_shape: Shape, padding: int = 1, fill: str = "zero") -> nn.Module:
    """Pad by `padding` pixels, then crop back to the input size at a random place.

    `fill`: `zero` pads with zeros of the batch as it is; `black` with intensity 0 (photo data
    only: the crop then runs on intensities, `reglab.augment.pixels.InPixels`).
    """
    import kornia.augmentation as K

    padding = checks.integer("padding", padding)
    fill = checks.choice("fill", fill, CROP_FILLS)
    module = K.RandomCrop(tuple(input_shape[1:]), padding=padding, p=1.0)
    return InPixels(module) if fill == "black" else module


@op("erasing", needs_images=True)
def erasing(
    input_shape: Shape,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> nn.Module:
    """Random erasing (Zhong et al.), kornia's: with probability p, a rectangle covering a share
    of the image uniform in `scale`, of height/width ratio in `ratio`, set to `value`."""
    import kornia.augmentation as K

    return K.RandomErasing(
        scale=interval("scale", scale, 0.0, 1.0),
        ratio=interval("ratio", ratio, 0.0, math.inf, low_open=True),
        value=checks.number("value", value),
        p=checks.probability("p", p),
    )


def interval(key: str, value: Any, low: float, high: float, **open_ends: bool) -> tuple:
    """[a, b] with low <= a <= b <= high (a sequence of two numbers: a YAML list)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ConfigError(key, f"must be [low, high], two numbers, got {value!r}")
    a, b = (checks.number(key, v, low, high, **open_ends) for v in value)
    if a > b:
        raise ConfigError(key, f"must be [low, high] with low <= high, got {list(value)!r}")
    return (a, b)


@op("noise")
def noise(input_shape: Shape, std: float = 0.1) -> nn.Module:
    """Additive Gaussian noise of standard deviation `std` (inputs are standardized: std ~ SNR)."""
    return GaussianNoise(checks.number("std", std, 0.0))
