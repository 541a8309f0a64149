"""RandAugment (Cubuk et al. 2020) and TrivialAugment (Müller & Hutter 2021), kornia's, as ops.

`randaugment: {n, m, groups}`: kornia's `kornia.augmentation.auto.RandAugment(n, m)`: n distinct
operations of its 15 (auto contrast, equalize, invert, rotate, posterize, solarize, solarize add,
colour, contrast, brightness, sharpness, shear and translate in x and y), each at magnitude m of
30 (torchvision's defaults: 2 operations at magnitude 9 of 31 bins). `trivialaugment: {groups}`:
kornia's `TrivialAugment()`: one operation of its 12, at a magnitude drawn per image.

Both are defined on intensities in [0, 1], so each runs inside `reglab.augment.pixels.InPixels`
(the batch is mapped to intensities and back; photo data only). kornia draws the operations once
per call, the same for every image of a batch (the magnitudes, and their signs, per image); the
papers draw them per image. `groups` cuts the batch into that many slices, each with its own
draw (`PerGroup`): the batch size gives the papers' per-image choice, at one call per image.
The papers apply them after the standard crop and flip (augmentation=randaugment, trivialaugment).
"""

from __future__ import annotations

from torch import nn

from reglab import checks
from reglab.augment.ops import Shape, op
from reglab.augment.pixels import InPixels, PerGroup

# The operations kornia 0.9's RandAugment chooses from (its default policy).
RANDAUGMENT_OPERATIONS = 15


@op("randaugment", needs_images=True)
def randaugment(input_shape: Shape, n: int = 2, m: int = 9, groups: int = 16) -> nn.Module:
    """kornia's RandAugment(n, m) on intensities, one draw of operations per group of images."""
    from kornia.augmentation.auto import RandAugment

    n = checks.integer("n", n, 1, RANDAUGMENT_OPERATIONS)
    m = checks.integer("m", m, 1, 29)  # kornia: magnitude strictly between 0 and 30
    return InPixels(PerGroup(RandAugment(n=n, m=m), checks.integer("groups", groups, 1)))


@op("trivialaugment", needs_images=True)
def trivialaugment(input_shape: Shape, groups: int = 16) -> nn.Module:
    """kornia's TrivialAugment on intensities, one draw of the operation per group of images."""
    from kornia.augmentation.auto import TrivialAugment

    return InPixels(PerGroup(TrivialAugment(), checks.integer("groups", groups, 1)))
