"""MNIST-format IDX files at a user path (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from reglab.data.base import TensorDataModule
from reglab.errors import ConfigError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file: magic (0, 0, dtype, ndim), big-endian int32 dims, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)}, file holds {data.size} values")
    return data.reshape(tuple(int(d) for d in dims))


class IdxDataModule(TensorDataModule):
    """Images and labels from `<path>/<prefix>-images-idx3-ubyte[.gz]` and `...-labels-idx1-ubyte`."""

    task = "classification"

    def __init__(
        self,
        path: str | None = None,
        train_prefix: str = "train",
        test_prefix: str = "t10k",
        **kwargs,
    ) -> None:
        if not path:
            raise ConfigError("path", "set it to the folder holding the IDX files")
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()
        self.train_prefix, self.test_prefix = train_prefix, test_prefix
        if not self.path.is_dir():
            raise ConfigError("path", f"{str(self.path)!r} is not a folder")
        self._find(self.train_prefix, "images", "idx3")  # fail before training, not in setup

    def _find(self, prefix: str, kind: str, idx: str, required: bool = True) -> Path | None:
        for name in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
            for candidate in (self.path / name, self.path / f"{name}.gz"):
                if candidate.exists():
                    return candidate
        if required:
            raise ConfigError("path", f"no {prefix}-{kind}-{idx}-ubyte[.gz] in {str(self.path)!r}")
        return None

    def _pair(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = read_idx(self._find(prefix, "images", "idx3"))
        labels = read_idx(self._find(prefix, "labels", "idx1"))
        if len(images) != len(labels):
            raise ConfigError("path", f"{prefix}: {len(images)} images but {len(labels)} labels")
        return images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray] | dict:
        """The train pair, and the test pair when present (else the test split comes from train)."""
        train = self._pair(self.train_prefix)
        if self._find(self.test_prefix, "images", "idx3", required=False) is None:
            return train
        return {"train": train, "test": self._pair(self.test_prefix)}
