"""Colour photos held as bytes: the shared base of the cifar10, cifar100 and svhn data sets.

A subclass names its `official` files (reglab.data.fetch: names under `data.root`, published
URLs and MD5s) and its number of `classes`, and reads a split in `read_split` as uint8 images
(N, C, H, W) and labels, passing what each file gave through `checked`. This base finds the files
under `root` before training (or downloads them with `download: true`), refuses what no training
can use (not uint8 images, images of another size than the training ones, labels outside the
official classes) as one error on `root` naming the file, and keeps the images as bytes on the
training device (`byte_inputs`): each batch is standardized there per channel, with the moments
of the training split. The official test files are the test split; the validation split is
drawn from the training files with `split_seed` (`val_fraction`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from reglab import checks
from reglab.data import fetch
from reglab.data.base import TensorDataModule
from reglab.errors import ConfigError

ImagePair = tuple[np.ndarray, np.ndarray]


class PhotoDataModule(TensorDataModule):
    """uint8 images (N, C, H, W) of `classes` classes, read from the `official` files under `root`."""

    byte_inputs = True
    official: fetch.Official
    classes: int

    def __init__(self, root: str | None = None, download: bool = False, **kwargs) -> None:
        self.download = checks.boolean("download", download)
        self.root = fetch.folder(root)
        super().__init__(**kwargs)
        fetch.ensure(self.root, self.official, download)  # before training, not in setup

    # --- what subclasses provide -------------------------------------------------------------
    def read_split(self, name: str) -> ImagePair:
        """'train' or 'test' as (uint8 images (N, C, H, W), int64 labels in [0, classes))."""
        raise NotImplementedError

    # --- the shared part ---------------------------------------------------------------------
    def checked(
        self, source: str, images: np.ndarray, labels: np.ndarray, first: int = 0
    ) -> ImagePair:
        """`images` and `labels` read from the file `source`, refused unless usable.

        Labels must be whole numbers in [first, first + classes) (`first`: the official
        numbering, 1 for SVHN's 1..10); they come back as int64 as given.
        """
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ConfigError(
                "root",
                f"{source}: images must be uint8 (count, channels, rows, columns), got "
                f"{images.dtype} {images.shape}",
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ConfigError(
                "root",
                f"{source}: labels must be integers (count,), got {labels.dtype} {labels.shape}",
            )
        if len(images) != len(labels):
            raise ConfigError("root", f"{source}: {len(images)} images but {len(labels)} labels")
        last = first + self.classes - 1
        outside = (labels < first) | (labels > last)
        if outside.any():
            raise ConfigError(
                "root",
                f"{source}: {int(outside.sum())} labels outside {first}..{last} (e.g. "
                f"{labels[outside][0]}): not {self.official.name} labels",
            )
        return images, labels.astype(np.int64)

    def read_files(
        self, files: tuple[str, ...], read: Callable[[Path], ImagePair], first: int = 0
    ) -> ImagePair:
        """The `files` (names under `root`) read by `read`, each `checked`, joined in order."""
        pairs = [self.checked(name, *read(self.root / name), first=first) for name in files]
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    def load_arrays(self) -> dict[str, ImagePair]:
        """The official training and test splits (the validation split comes from training)."""
        parts = {name: self.read_split(name) for name in ("train", "test")}
        (train, _), (test, _) = parts["train"], parts["test"]
        if train.shape[1:] != test.shape[1:]:
            raise ConfigError(
                "root",
                f"the test images are {test.shape[1:]}, the training images {train.shape[1:]}",
            )
        return parts

    def input_moments(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of each channel's bytes, exact from their counts (no float copy)."""
        return byte_moments(byte_counts(x_train), x_train.ndim)

    @property
    def num_classes(self) -> int:
        """The official number of classes (whichever a small training split happens to hold)."""
        return self.classes


def byte_counts(images: np.ndarray) -> np.ndarray:
    """How often each byte value occurs in each channel of uint8 `images` (N, C, ...): (C, 256).

    Counts of batches add up to the counts of their union: a reader that streams its images
    sums them batch by batch and gets the moments of the whole split, exactly.
    """
    return np.stack(
        [np.bincount(images[:, c].ravel(), minlength=256) for c in range(images.shape[1])]
    )


def byte_moments(counts: np.ndarray, ndim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each channel from its `byte_counts`, shaped to broadcast over (N, C, ...)
    of `ndim` axes; a constant channel gets std 1."""
    values = np.arange(256, dtype=np.float64)
    counts = counts.astype(np.float64)
    total = counts.sum(axis=1)
    mean = counts @ values / total
    std = np.sqrt(np.maximum(counts @ values**2 / total - mean**2, 0.0))
    shape = (1, -1) + (1,) * (ndim - 2)
    return mean.reshape(shape), np.where(std > 1e-8, std, 1.0).reshape(shape)
