"""A class-per-folder tree of PNG/JPEG images of any size (data=image_folder).

`data.root/<class>/**/*.png|jpg|jpeg`, as torchvision's `ImageFolder` reads it: the class ids are
the class folders' names sorted, and the files of each class, found recursively (following links),
are numbered in its order (folders as `os.walk` lists them, sorted, then file names sorted). A
root holding `train/` and `test/` (or `val/`, when there is no `test/`) is split officially: the
held-out tree is the test split (its classes must be training classes), the validation split is
drawn from `train/` with `split_seed`; any other root is one pool from which the base draws
stratified test and validation splits.

Each file is decoded with Pillow into `channels` (1: grayscale "L", 3: "RGB", as torchvision's
loader converts), and with `image_size` resized so that its shorter side is `image_size` (bilinear,
the longer side scaled and truncated, as torchvision's `Resize(int)`) and center-cropped to a
square (`CenterCrop`); without it every image must have the size of the first. Images are uint8 (N,
C, H, W) standardized per channel per batch on the device, with the training split's exact moments
(as cifar10).

Memory: when the decoded images fit `memory_budget_mb` they are decoded once (by `num_workers`
DataLoader workers) and held in memory as bytes; otherwise the splits are streamed (reglab.data.
stream): files are decoded per batch by `num_workers` workers, with `pin_memory` and
`persistent_workers`. Before training a streamed root is decoded once: every file is checked,
and the training split's byte counts give the standardization moments. What is promised: for the
same seeds and settings, both paths give the same batches, the same samples in the same order each
epoch with bit-for-bit the same values; the number of workers, pinning and persistence change
neither. Every unreadable file (missing root, no class folders, a class folder without images, a
truncated or corrupt image, an image of another size without `image_size`) is one error on `root`
naming the file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from reglab import checks
from reglab.data import fetch
from reglab.data.base import Split, TensorDataModule
from reglab.data.photos import byte_counts, byte_moments
from reglab.data.stream import StreamingLoader, Unreadable, stream
from reglab.errors import ConfigError

EXTENSIONS = (".png", ".jpg", ".jpeg")
MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode
HELD_OUT = ("test", "val")  # the official held-out tree, in order of preference
MIB = 1 << 20


@dataclass(frozen=True)
class Decoder:
    """How a file becomes uint8 (C, H, W): Pillow `mode`, then shorter side -> `size` + center
    crop (`size` None: as stored, which must be `shape`'s size when one is given)."""

    mode: str
    size: int | None
    shape: tuple[int, int] | None = None  # (H, W) every image must have without `size`

    def __call__(self, path: Path) -> np.ndarray | Unreadable:
        """The file at `path` decoded, or `Unreadable` naming it."""
        from PIL import Image  # here: runs on other data do not import Pillow

        name = str(path)
        try:
            with Image.open(path) as image:
                image = image.convert(self.mode)  # decodes the whole file
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
            return Unreadable(f"{name}: truncated or not a PNG/JPEG image ({error})")
        if self.size is not None:
            image = center_crop(resize_shorter(image, self.size), self.size)
        elif self.shape is not None and image.size[::-1] != self.shape:
            height, width = self.shape
            return Unreadable(
                f"{name} is {image.width}x{image.height} pixels, the first image "
                f"{width}x{height}: set data.image_size to resize them all"
            )
        array = np.array(image, dtype=np.uint8)  # a writable copy (torch shares it)
        return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def resize_shorter(image, size: int):  # noqa: ANN001, ANN201 (Pillow images, imported lazily)
    """`image` with its shorter side `size`, bilinear, as torchvision's `Resize(size)` on PIL."""
    from PIL import Image

    width, height = image.size
    short, long = sorted((width, height))
    if short == size:
        return image
    new_long = int(size * long / short)
    new = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new, Image.BILINEAR)


def center_crop(image, size: int):  # noqa: ANN001, ANN201
    """The central `size` x `size` of `image`, rounded as torchvision's `CenterCrop`."""
    top = int(round((image.height - size) / 2.0))
    left = int(round((image.width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class FolderImages(torch.utils.data.Dataset):
    """The image files of a split as a dataset: item i is file i decoded, a uint8 tensor (C, H, W)
    (or `Unreadable`); `shape` is (N, C, H, W) as an in-memory split's."""

    def __init__(self, paths: list[Path], decode: Decoder, shape: tuple[int, ...]) -> None:
        self.paths, self.decode = paths, decode
        self.shape = (len(paths), *shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | Unreadable:
        image = self.decode(self.paths[i])
        return image if isinstance(image, Unreadable) else torch.from_numpy(image)

    def to(self, device: torch.device) -> FolderImages:
        """The files stay where they are (the data base moves in-memory splits to the device)."""
        return self


class ImageFolderDataModule(TensorDataModule):
    """A class-per-folder image tree under `root` (see the module docstring)."""

    byte_inputs = True

    def __init__(
        self,
        root: str | None = None,
        image_size: int | None = None,
        channels: int = 3,
        memory_budget_mb: float = 2048,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        **kwargs,
    ) -> None:
        self.root = fetch.folder(root)
        if image_size is not None:
            checks.integer("image_size", image_size, minimum=1)
        self.image_size = image_size
        self.channels = checks.integer("channels", channels, minimum=1)
        if self.channels not in MODES:
            raise ConfigError("channels", f"1 (grayscale) or 3 (RGB), got {channels!r}")
        self.memory_budget_mb = checks.number("memory_budget_mb", memory_budget_mb, 0, math.inf)
        self.num_workers = checks.integer("num_workers", num_workers, minimum=0)
        self.pin_memory = checks.boolean("pin_memory", pin_memory)
        self.persistent_workers = checks.boolean("persistent_workers", persistent_workers)
        super().__init__(**kwargs)
        self.classes, self.files = scan(self.root)  # before training, not in setup

    # --- the tree -----------------------------------------------------------------------------
    @cached_property
    def decoder(self) -> Decoder:
        """The decoding of every file; without `image_size`, the first file's size is the size."""
        decoder = Decoder(MODES[self.channels], self.image_size)
        if self.image_size is not None:
            return decoder
        first = decoder(next(iter(self.files.values()))[0][0])
        if isinstance(first, Unreadable):
            raise ConfigError("root", first.message)
        return Decoder(decoder.mode, None, first.shape[1:])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every decoded image."""
        size = self.decoder.shape or (self.image_size, self.image_size)
        return (self.channels, *size)

    @property
    def in_memory(self) -> bool:
        """Whether the decoded images fit `memory_budget_mb` (else they are streamed)."""
        count = sum(len(paths) for paths, _ in self.files.values())
        return count * math.prod(self.image_shape) <= self.memory_budget_mb * MIB

    def images(self, paths: list[Path]) -> FolderImages:
        """`paths` as a dataset of decoded images."""
        return FolderImages(paths, self.decoder, self.image_shape)

    # --- the splits ---------------------------------------------------------------------------
    def load_arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The in-memory path: every image decoded once, as uint8 (N, C, H, W)."""
        return {part: (self.decoded(paths), labels) for part, (paths, labels) in self.files.items()}

    def decoded(self, paths: list[Path]) -> np.ndarray:
        """The files decoded by the workers into one uint8 array (N, C, H, W)."""
        images = np.empty((len(paths), *self.image_shape), dtype=np.uint8)
        start = 0
        for batch in stream(self.images(paths), self.batch_size, self.num_workers):
            images[start : start + len(batch)] = batch.numpy()
            start += len(batch)
        return images

    @cached_property
    def splits(self) -> dict[str, Split]:
        """In memory: the base's splits of the decoded images. Streamed: the same split of the
        file indices, each split a `FolderImages`, checked and counted in one pass."""
        if self.in_memory:
            return super().splits
        indices = {part: (np.arange(len(paths)), y) for part, (paths, y) in self.files.items()}
        parts = self.split(indices)
        pool = "all" if "all" in self.files else "train"  # where train and val come from
        source = {"train": pool, "val": pool, "test": "all" if pool == "all" else "test"}
        datasets = {
            name: self.images([self.files[source[name]][0][i] for i in index])
            for name, (index, _) in parts.items()
        }
        # Each file is checked before training, not mid-epoch (the moments read the training one).
        for name in ("val", "test") if self.standardize else ("train", "val", "test"):
            for _ in stream(datasets[name], self.batch_size, self.num_workers):
                pass
        parts = self.standardized({name: (datasets[name], y) for name, (_, y) in parts.items()})
        return {
            name: Split(x, torch.as_tensor(y, dtype=torch.long)) for name, (x, y) in parts.items()
        }

    def input_moments(self, x_train: np.ndarray | FolderImages) -> tuple[np.ndarray, np.ndarray]:
        """Each channel's mean and std from the training split's byte counts (streamed: summed
        batch by batch over the files, which checks each of them)."""
        if isinstance(x_train, np.ndarray):
            return byte_moments(byte_counts(x_train))
        counts = sum(
            byte_counts(batch.numpy())
            for batch in stream(x_train, self.batch_size, self.num_workers)
        )
        return byte_moments(counts)

    @property
    def num_classes(self) -> int:
        """The number of class folders (whichever a split happens to hold)."""
        return len(self.classes)

    # --- loaders ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """The base's loaders; streamed splits have DataLoader workers decode them in that order."""
        super().setup(stage)
        if self.in_memory:
            return
        for name, batches in self._loaders.items():
            self._loaders[name] = StreamingLoader(
                batches,
                self.splits[name].x,
                self.num_workers,
                self.pin_memory,
                self.persistent_workers,
                key="data.root",  # raised in fit, outside the config path the build adds
            )


def scan(root: Path) -> tuple[list[str], dict[str, tuple[list[Path], np.ndarray]]]:
    """The class names (sorted) and the files and labels of each part: 'all', or 'train' and
    'test' (the `train/` and `test/` or `val/` trees)."""
    if not root.is_dir():
        raise ConfigError("root", f"{str(root)!r} is not a folder of class folders")
    held_out = next((root / n for n in HELD_OUT if (root / n).is_dir()), None)
    if held_out is None or not (root / "train").is_dir():
        classes, paths, labels = class_files(root)
        return classes, {"all": (paths, labels)}
    classes, paths, labels = class_files(root / "train")
    test_classes, test_paths, test_labels = class_files(held_out)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise ConfigError(
            "root",
            f"{held_out}/ has classes that {root / 'train'}/ lacks: {', '.join(unknown)}",
        )
    ids = np.array([classes.index(c) for c in test_classes])
    return classes, {"train": (paths, labels), "test": (test_paths, ids[test_labels])}


def class_files(folder: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """The class folders of `folder` (sorted) and their image files (recursive, sorted) with labels."""
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    if not classes:
        raise ConfigError(
            "root",
            f"{folder}/ holds no class folders: put each class's images in a "
            f"folder named after it ({'/'.join(EXTENSIONS)})",
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = [  # in torchvision's order: folders as os.walk lists them, sorted; then names
            Path(where) / file
            for where, _, names in sorted(os.walk(folder / name, followlinks=True))
            for file in sorted(names)
            if file.lower().endswith(EXTENSIONS)
        ]
        if not files:
            raise ConfigError("root", f"{folder / name}/ holds no {'/'.join(EXTENSIONS)} images")
        paths += files
        labels += [label] * len(files)
    return classes, paths, np.array(labels, dtype=np.int64)
