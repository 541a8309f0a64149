"""Batch augmentation ops, by name: per-sample ops (`OPS`) and mixing ops (`MIXES`).

`reglab.callbacks.BatchAugmentation` resolves the `augmentation` config's `ops` list and `mix`
mapping through these tables; register an entry to make a new op nameable in the config.
"""

from reglab.augment import cutout, policies  # noqa: F401 (register their ops in OPS)
from reglab.augment.cutout import Cutout
from reglab.augment.mixing import MIXES, MODES, MixDraw, Mixing, cutmix, mix, mixup
from reglab.augment.ops import OPS, GaussianNoise, Op, op
from reglab.augment.pixels import InPixels, PerGroup, PixelMap

__all__ = [
    "MIXES",
    "MODES",
    "OPS",
    "Cutout",
    "GaussianNoise",
    "InPixels",
    "MixDraw",
    "Mixing",
    "Op",
    "PerGroup",
    "PixelMap",
    "cutmix",
    "mix",
    "mixup",
    "op",
]
