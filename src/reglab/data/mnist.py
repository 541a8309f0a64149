"""The MNIST family as presets of the IDX reader (data=mnist, data=fashion_mnist, data=kmnist).

Each reads the four official files, `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz` (or the same unpacked, without .gz),
directly under `data.root`, with everything `reglab.data.idx` offers (layouts, tokens,
denoising); `download: true` fetches them from the published site, checked against the MD5s
torchvision lists for `MNIST`, `FashionMNIST` and `KMNIST`. The t10k pair is the test split.
Errors about the files name `root` (the IDX reader's `path`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from reglab import checks
from reglab.data import fetch
from reglab.data.fetch import Download, Official
from reglab.data.idx import IdxDataModule
from reglab.errors import ConfigError

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _family(name: str, site: str, md5s: tuple[str, ...]) -> Official:
    return Official(
        name, FILES, tuple(Download(f"{site}/{f}", m) for f, m in zip(FILES, md5s, strict=True))
    )


OFFICIAL = {
    "mnist": _family(
        "MNIST",
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    "fashion_mnist": _family(
        "Fashion-MNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    "kmnist": _family(
        "KMNIST",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist",
        (
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
    ),
}
CLASSES = 10  # every member of the family


@contextmanager
def _as_root() -> Iterator[None]:
    """The IDX reader's errors on `path` become errors on `root`, the key a user typed."""
    try:
        yield
    except ConfigError as error:
        if error.key != "path":
            raise
        raise ConfigError("root", error.message) from None


class MnistFamilyDataModule(IdxDataModule):
    """The IDX reader over the `official` files of one family member under `root`."""

    def __init__(
        self, official: str = "mnist", root: str | None = None, download: bool = False, **kwargs
    ) -> None:
        self.official = OFFICIAL[checks.choice("official", official, tuple(OFFICIAL))]
        self.download = checks.boolean("download", download)
        self.root = fetch.folder(root)
        fetch.ensure(self.root, self.official, download)
        with _as_root():
            super().__init__(path=self.root, train_prefix="train", test_prefix="t10k", **kwargs)

    def load_images(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The train and t10k pairs; labels must be the family's 10 classes."""
        with _as_root():
            loaded = super().load_images()
        for name, (_, labels) in loaded.items():
            if labels.max() >= CLASSES:
                raise ConfigError(
                    "root",
                    f"{name} labels: {int((labels >= CLASSES).sum())} outside 0..{CLASSES - 1}: "
                    f"not {self.official.name} labels",
                )
        return loaded

    @property
    def num_classes(self) -> int | None:
        """10 for labels; None for `target: denoise` (regression)."""
        return CLASSES if self._task.class_labels else None
