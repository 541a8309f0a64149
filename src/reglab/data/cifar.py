"""CIFAR-10 and CIFAR-100 from their python pickle batches (data=cifar10, data=cifar100).

The official "python version" archives (Krizhevsky 2009), as unpacked under `data.root`:
`cifar-10-batches-py/data_batch_1` .. `data_batch_5` and `test_batch` (label key b"labels",
10 classes), `cifar-100-python/train` and `test` (b"fine_labels": 100 classes, or
b"coarse_labels": 20 superclasses, by `label_kind`). Each pickle is a dict whose b"data" is a
(count, 3072) uint8 array: the red, green and blue 32x32 planes of each image, row by row. The
meta files (`batches.meta`, `meta`: class names) are not needed. Pickles are read with an
unpickler that builds only numpy arrays, so a file from elsewhere cannot run code.
URLs and MD5s: those torchvision's `CIFAR10`/`CIFAR100` use.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from reglab import checks
from reglab.data.fetch import Download, Official
from reglab.data.photos import PhotoDataModule
from reglab.errors import ConfigError

CIFAR10_FOLDER, CIFAR100_FOLDER = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_TRAIN = tuple(f"{CIFAR10_FOLDER}/data_batch_{i}" for i in range(1, 6))
CIFAR10 = Official(
    "CIFAR-10",
    files=(*CIFAR10_TRAIN, f"{CIFAR10_FOLDER}/test_batch"),
    downloads=(
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            unpack=True,
        ),
    ),
)
CIFAR100 = Official(
    "CIFAR-100",
    files=(f"{CIFAR100_FOLDER}/train", f"{CIFAR100_FOLDER}/test"),
    downloads=(
        Download(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            unpack=True,
        ),
    ),
)
LABEL_KINDS = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}
SHAPE = (3, 32, 32)

# What a CIFAR batch pickle may build: numpy arrays (as numpy 1 and 2 and Python 2 wrote them).
_ALLOWED = {
    *(
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    ),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, not numpy arrays")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle batch: (images uint8 (N, 3, 32, 32), labels) as the file holds them.

    A file that is not such a batch is a ConfigError on `root` naming it.
    """
    name = f"{path.parent.name}/{path.name}"
    try:
        with path.open("rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ConfigError("root", f"{name}: truncated or not a CIFAR pickle ({error})") from None
    except OSError as error:
        raise ConfigError("root", f"{name}: cannot be read ({error.strerror or error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ConfigError(
            "root", f"{name}: not a CIFAR batch: needs keys b'data' and {label_key!r}, has {keys}"
        )
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != int(np.prod(SHAPE)):
        raise ConfigError(
            "root", f"{name}: b'data' must be uint8 (count, 3072), got {data.dtype} {data.shape}"
        )
    return data.reshape(-1, *SHAPE), np.asarray(batch[label_key])


class CifarDataModule(PhotoDataModule):
    """The batches of one CIFAR data set: `train_files` and `test_file` under `root`."""

    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes

    def read_split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """'train': the training batches concatenated; 'test': the test batch."""
        files = self.train_files if name == "train" else (self.test_file,)
        return self.read_files(files, lambda path: read_batch(path, self.label_key))


class Cifar10DataModule(CifarDataModule):
    """CIFAR-10: 50,000 training and 10,000 test 3x32x32 images of 10 classes."""

    official, classes, label_key = CIFAR10, 10, b"labels"
    train_files, test_file = CIFAR10_TRAIN, CIFAR10.files[-1]


class Cifar100DataModule(CifarDataModule):
    """CIFAR-100: 50,000 + 10,000 images; 100 fine classes or 20 coarse ones (`label_kind`)."""

    official = CIFAR100
    train_files, test_file = CIFAR100.files[:1], CIFAR100.files[1]

    def __init__(self, label_kind: str = "fine", **kwargs) -> None:
        checks.choice("label_kind", label_kind, tuple(LABEL_KINDS))
        self.label_kind = label_kind
        self.label_key, self.classes = LABEL_KINDS[label_kind]
        super().__init__(**kwargs)
