"""MNIST-format IDX files at a user path (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not.

The images take every layout of `reglab.data.images`. Pixel values are divided by 255 (so bytes
give [0, 1], the units of `noise_std` for `target: denoise`); `layout: tokens` quantizes bytes
0..255 into `levels` tokens, token = pixel * levels // 256 (levels 256: the bytes themselves).
"""

from __future__ import annotations

import gzip
import math
import zlib
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from reglab import checks
from reglab.data.images import ImageDataModule
from reglab.errors import ConfigError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file: magic (0, 0, dtype, ndim), big-endian int32 dims, then the data.

    A file that is not a whole IDX file is a ConfigError on `path` naming the file.
    """
    return _parse_idx(path.name, _read_bytes(path))


def _parse_idx(name: str, raw: bytes) -> np.ndarray:
    """The array in the IDX bytes `raw` of the file `name`, its header checked against its size."""

    def refuse(problem: str) -> ConfigError:
        return ConfigError("path", f"{name}: {problem}")

    if not raw:
        raise refuse("empty file (0 bytes)")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise refuse(f"not an IDX file (bad magic number 0x{raw[:4].hex()})")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if ndim == 0:
        raise refuse("the header gives 0 dimensions")
    if len(raw) < header:
        raise refuse(f"truncated: {len(raw)} bytes, less than a header of {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if min(shape) <= 0:
        raise refuse(f"the header gives an impossible shape {shape}")
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize  # a Python int: no overflow
    held = len(raw) - header
    if held < expected:
        raise refuse(f"truncated: the header says {shape}, {expected} bytes, the file holds {held}")
    if held > expected:
        raise refuse(f"{held - expected} bytes after the {shape} values the header gives")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped for a `.gz` name; a file that cannot be read is a ConfigError."""
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        problem = "is a folder, not a file"
    except PermissionError:
        problem = "cannot be read (permission denied)"
    except gzip.BadGzipFile as error:
        problem = (
            "not gzip data, though the name ends in .gz"
            if str(error).startswith("Not a gzipped file")
            else f"damaged gzip data ({error})"
        )
    except (EOFError, zlib.error) as error:
        problem = f"damaged gzip data ({error})"
    except OSError as error:
        problem = f"cannot be read ({error.strerror or error})"
    raise ConfigError("path", f"{path.name}: {problem}")


class IdxDataModule(ImageDataModule):
    """Images and labels from `<path>/<prefix>-images-idx3-ubyte[.gz]` and `...-labels-idx1-ubyte`."""

    def __init__(
        self,
        path: str | None = None,
        train_prefix: str = "train",
        test_prefix: str = "t10k",
        layout: str = "image",
        target: str = "label",
        noise_std: float = 0.25,
        levels: int = 256,
        **kwargs,
    ) -> None:
        if path is None or path == "":
            raise ConfigError("path", "set it to the folder holding the IDX files")
        train_prefix = _name("train_prefix", train_prefix)
        test_prefix = _name("test_prefix", test_prefix)
        if test_prefix == train_prefix:  # the test split would be the training data
            raise ConfigError(
                "test_prefix", f"must differ from train_prefix, both are {test_prefix!r}"
            )
        self.levels = checks.integer("levels", levels, 2, 256)
        super().__init__(layout=layout, target=target, noise_std=noise_std, **kwargs)
        self.path = Path(path if isinstance(path, PathLike) else _name("path", path)).expanduser()
        self.train_prefix, self.test_prefix = train_prefix, test_prefix
        try:
            is_folder = self.path.is_dir()
        except OSError as error:  # a folder above it that cannot be read
            raise ConfigError("path", f"{str(self.path)!r} cannot be read ({error})") from None
        if not is_folder:
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
        images_file = self._find(prefix, "images", "idx3")
        labels_file = self._find(prefix, "labels", "idx1")
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.ndim != 3:
            hint = " (a labels file?)" if images.ndim == 1 else ""
            raise ConfigError(
                "path",
                f"{images_file.name}: images must be (count, rows, columns), the header gives "
                f"{images.shape}{hint}",
            )
        if labels.ndim != 1:
            raise ConfigError(
                "path",
                f"{labels_file.name}: labels must be (count,), the header gives {labels.shape}",
            )
        if len(images) != len(labels):
            raise ConfigError("path", f"{prefix}: {len(images)} images but {len(labels)} labels")
        if labels.dtype.kind == "f":
            raise ConfigError("path", f"{labels_file.name}: labels must be integers, not floats")
        if labels.min() < 0:
            negative = int(np.count_nonzero(labels < 0))
            raise ConfigError("path", f"{labels_file.name}: {negative} negative labels")
        whole = images.dtype.kind in "iu"  # integer pixels are finite as float32 too
        bad = 0 if whole else int(np.count_nonzero(~np.isfinite(self.pixels(images))))
        if bad:
            raise ConfigError("path", f"{images_file.name}: {bad} NaN/inf pixel values")
        return images, labels.astype(np.int64)

    @property
    def num_tokens(self) -> int:
        """The token vocabulary: `levels`."""
        return self.levels

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """Pixel values / 255 as float32 (float64 values beyond float32 become inf)."""
        with np.errstate(over="ignore"):
            return images.astype(np.float32) / 255.0

    def tokens(self, images: np.ndarray) -> np.ndarray:
        """Bytes 0..255 quantized into `levels` tokens: pixel * levels // 256."""
        low, high = images.min(), images.max()
        if np.any(images != np.round(images)) or low < 0 or high > 255:
            raise ConfigError(
                "layout",
                f"tokens need whole-number pixel values in 0..255, the images hold {images.dtype} "
                f"values in [{low:g}, {high:g}]: use layout image, flat or sequence",
            )
        return images.astype(np.int64) * self.levels // 256

    def load_images(self) -> tuple[np.ndarray, np.ndarray] | dict:
        """The train pair, and the test pair when present (else the test split comes from train)."""
        train = self._pair(self.train_prefix)
        test_images = self._find(self.test_prefix, "images", "idx3", required=False)
        if test_images is None:
            return train
        test = self._pair(self.test_prefix)
        if test[0].shape[1:] != train[0].shape[1:]:
            size, expected = ("x".join(map(str, a[0].shape[1:])) for a in (test, train))
            train_images = self._find(self.train_prefix, "images", "idx3")
            raise ConfigError(
                "path",
                f"{test_images.name}: {size} images, but {train_images.name} holds {expected}",
            )
        return {"train": train, "test": test}


def _name(key: str, value: Any) -> str:
    """A file name prefix or a folder: a string (a number on the command line is read as one)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")
    return str(value)
