"""SVHN, the Street View House Numbers in their cropped-digit form (data=svhn).

The official MATLAB files (Netzer et al. 2011) under `data.root`: `train_32x32.mat` (73,257
digits) and `test_32x32.mat` (26,032), and with `extra: true` also `extra_32x32.mat` (531,131
easier digits, added to the training files as the papers that use it do). Each holds `X`, uint8
[32, 32, 3, count], and `y`, [count, 1] labels 1..10, where 10 means the digit 0. Read with
scipy.io.loadmat. URLs and MD5s: those torchvision's `SVHN` uses.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from reglab import checks
from reglab.data.fetch import Download, Official
from reglab.data.photos import PhotoDataModule
from reglab.errors import ConfigError

SITE = "http://ufldl.stanford.edu/housenumbers"
DOWNLOADS = {
    "train": Download(f"{SITE}/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": Download(f"{SITE}/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": Download(f"{SITE}/extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}
CLASSES = 10  # the digits; the files write 0 as 10


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN file: (images uint8 (N, 3, 32, 32), labels 1..10 as the file holds them)."""
    import scipy.io  # here: a run on other data does not pay for importing it
    from scipy.io.matlab import MatReadError

    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (MatReadError, ValueError, TypeError, OSError, EOFError, zlib.error) as error:
        raise ConfigError(
            "root", f"{path.name}: truncated or not a MATLAB file ({error})"
        ) from None
    except NotImplementedError as error:  # a v7.3 (HDF5) file
        raise ConfigError("root", f"{path.name}: {error}") from None
    if "X" not in mat or "y" not in mat:
        raise ConfigError("root", f"{path.name}: not an SVHN file: needs variables X and y")
    images, labels = mat["X"], mat["y"]
    if images.ndim != 4 or images.shape[2] != 3:
        raise ConfigError(
            "root", f"{path.name}: X must be [rows, columns, 3, count], got {images.shape}"
        )
    # [H, W, C, N] -> (N, C, H, W), as torchvision reads it; y is [N, 1] in the files.
    return images.transpose(3, 2, 0, 1), labels.reshape(-1) if labels.ndim == 2 else labels


class SvhnDataModule(PhotoDataModule):
    """SVHN digits: 3x32x32 images of 10 classes; `extra` adds the extra training file."""

    classes = CLASSES

    def __init__(self, extra: bool = False, **kwargs) -> None:
        self.extra = checks.boolean("extra", extra)
        parts = ("train", "test", "extra") if extra else ("train", "test")
        self.official = Official(
            "SVHN",
            files=tuple(DOWNLOADS[p].filename for p in parts),
            downloads=tuple(DOWNLOADS[p] for p in parts),
        )
        super().__init__(**kwargs)

    def read_split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """'test': the test file; 'train': the training file (and the extra one with `extra`)."""
        parts = ("train", "extra") if name == "train" and self.extra else (name,)
        files = tuple(DOWNLOADS[part].filename for part in parts)
        images, labels = self.read_files(files, read_mat, first=1)
        return images, labels % CLASSES  # 10 -> 0
