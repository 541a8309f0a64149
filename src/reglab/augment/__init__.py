"""Batch augmentation ops, by name: per-sample ops (`OPS`) and mixing ops (`MIXES`).

`reglab.callbacks.BatchAugmentation` resolves the `augmentation` config's `ops` list and `mix`
mapping through these tables; register an entry to make a new op nameable in the config.
"""

from reglab.augment.mixing import MIXES, MODES, MixDraw, Mixing, cutmix, mix, mixup
from reglab.augment.ops import OPS, GaussianNoise, Op, op

__all__ = [
    "MIXES",
    "MODES",
    "OPS",
    "GaussianNoise",
    "MixDraw",
    "Mixing",
    "Op",
    "cutmix",
    "mix",
    "mixup",
    "op",
]
