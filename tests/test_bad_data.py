"""Bad data input is refused before training: one ConfigError naming the data class's argument.

Every row builds a data module (or a whole run) from one bad value or one damaged file and checks
the error's key and message; nothing trains. Positive rows keep the checks from being over-strict.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import compose_config, run_train_py
from reglab.data import (
    DigitsDataModule,
    FunctionDataModule,
    IdxDataModule,
    MoonsDataModule,
    RegressionDataModule,
    TensorDataModule,
    VolumesDataModule,
)
from reglab.errors import ConfigError
from reglab.run import run_one

# --- IDX files: a valid folder, then one thing broken -------------------------------------------

N_TRAIN, N_TEST, SIDE, CLASSES = 20, 6, 4, 2
UINT8, INT8, FLOAT32, FLOAT64 = 0x08, 0x09, 0x0D, 0x0E
IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def idx_bytes(array: np.ndarray, code: int = UINT8, shape: tuple[int, ...] | None = None) -> bytes:
    """An IDX file: 0, 0, dtype code, ndim, big-endian int32 dims (`shape` overrides), data."""
    dtype = {UINT8: np.uint8, INT8: np.int8, FLOAT32: ">f4", FLOAT64: ">f8"}[code]
    shape = array.shape if shape is None else shape
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}i", *shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def images(n: int = N_TRAIN, side: int = SIDE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def labels(n: int = N_TRAIN) -> np.ndarray:
    return (np.arange(n) % CLASSES).astype(np.uint8)


def valid_files() -> dict[str, bytes]:
    """A train pair of 20 4x4 images in 2 classes and a t10k pair of 6."""
    return {
        IMAGES: idx_bytes(images()),
        LABELS: idx_bytes(labels()),
        TEST_IMAGES: idx_bytes(images(N_TEST, seed=1)),
        TEST_LABELS: idx_bytes(labels(N_TEST)),
    }


def gzipped(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def write_folder(folder: Path, files: dict[str, bytes | None]) -> Path:
    """Write `files` into `folder`; a None content makes a folder of that name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        if raw is None:
            (folder / name).mkdir()
        else:
            (folder / name).write_bytes(raw)
    return folder


def with_file(name: str, raw: bytes | None, drop: tuple[str, ...] = ()) -> Callable[[], dict]:
    """The valid files with `name` replaced (or added) and `drop` left out."""

    def files() -> dict[str, bytes | None]:
        out = {k: v for k, v in valid_files().items() if k not in drop}
        out[name] = raw
        return out

    return files


def as_gz(name: str, raw: bytes) -> Callable[[], dict]:
    """The valid files with `name` stored as `name.gz` holding `raw`."""
    return with_file(f"{name}.gz", raw, drop=(name,))


GOOD_IMAGES = idx_bytes(images())
GOOD_LABELS = idx_bytes(labels())
FLOAT_IMAGES = images().astype(np.float64) / 255
NAN_IMAGES = FLOAT_IMAGES.copy()
NAN_IMAGES[0, 0, :3] = np.nan
INF_IMAGES = FLOAT_IMAGES.copy()
INF_IMAGES[5, 1, 1] = -np.inf
HUGE_IMAGES = FLOAT_IMAGES.copy()
HUGE_IMAGES[2, 2, 2] = 1e300  # finite as float64, inf as float32
GZ_DAMAGED = bytearray(gzipped(GOOD_IMAGES))
GZ_DAMAGED[20:40] = bytes(20)  # deflate data overwritten
SINGLE_OF_A_CLASS = labels()
SINGLE_OF_A_CLASS[3] = 7  # class 7 has one training sample: no stratified split

# (id, files, fragment of the message): each refused as ConfigError("path", "<file>: ...").
IDX_CASES = [
    ("truncated data", with_file(IMAGES, GOOD_IMAGES[:-1]), f"{IMAGES}: truncated"),
    ("truncated header", with_file(IMAGES, GOOD_IMAGES[:9]), f"{IMAGES}: truncated"),
    ("truncated labels", with_file(LABELS, GOOD_LABELS[:-3]), f"{LABELS}: truncated"),
    ("trailing bytes", with_file(IMAGES, GOOD_IMAGES + b"\0\0"), "2 bytes after"),
    ("empty file", with_file(IMAGES, b""), f"{IMAGES}: empty file"),
    ("three bytes", with_file(IMAGES, b"\0\0\x08"), "bad magic number"),
    ("magic byte 0", with_file(IMAGES, b"\x01" + GOOD_IMAGES[1:]), "bad magic number"),
    ("magic byte 1", with_file(IMAGES, b"\0\x01" + GOOD_IMAGES[2:]), "bad magic number"),
    ("unknown dtype", with_file(IMAGES, b"\0\0\x07" + GOOD_IMAGES[3:]), "bad magic number"),
    ("text file", with_file(IMAGES, b"hello, world\n" * 10), "bad magic number"),
    ("png file", with_file(IMAGES, b"\x89PNG\r\n\x1a\n" + bytes(64)), "bad magic number"),
    ("gz truncated", as_gz(IMAGES, gzipped(GOOD_IMAGES)[:-12]), f"{IMAGES}.gz: damaged gzip"),
    ("gz not gzip", as_gz(IMAGES, GOOD_IMAGES), "not gzip data"),
    ("gz damaged", as_gz(IMAGES, bytes(GZ_DAMAGED)), f"{IMAGES}.gz: damaged gzip"),
    ("gz empty", as_gz(IMAGES, b""), f"{IMAGES}.gz: empty file"),
    ("gz labels", as_gz(LABELS, gzipped(GOOD_LABELS)[:15]), f"{LABELS}.gz: damaged gzip"),
    ("ndim 0", with_file(IMAGES, b"\0\0\x08\0" + bytes(10)), "0 dimensions"),
    ("ndim 255", with_file(IMAGES, b"\0\0\x08\xff" + bytes(40)), "truncated"),
    (
        "dimension 0",
        with_file(IMAGES, idx_bytes(images(), shape=(N_TRAIN, 0, SIDE))),
        "impossible shape (20, 0, 4)",
    ),
    (
        "dimension -1",
        with_file(IMAGES, idx_bytes(images(), shape=(N_TRAIN, -1, SIDE))),
        "impossible shape (20, -1, 4)",
    ),
    (
        "dimensions overflow",
        with_file(IMAGES, idx_bytes(images(), shape=(2**31 - 1, 2**31 - 1, 2**31 - 1))),
        "truncated",
    ),
    (
        "dimensions too small",
        with_file(IMAGES, idx_bytes(images(), shape=(N_TRAIN, SIDE, SIDE - 1))),
        "bytes after",
    ),
    ("images 2-D", with_file(IMAGES, idx_bytes(images().reshape(N_TRAIN, -1))), "(20, 16)"),
    ("images 4-D", with_file(IMAGES, idx_bytes(images()[:, None])), "(count, rows, columns)"),
    ("labels file as images", with_file(IMAGES, GOOD_LABELS), "a labels file?"),
    ("labels 2-D", with_file(LABELS, idx_bytes(labels().reshape(-1, 2))), "labels must be"),
    ("images file as labels", with_file(LABELS, GOOD_IMAGES), "labels must be (count,)"),
    ("count mismatch", with_file(LABELS, idx_bytes(labels(19))), "20 images but 19 labels"),
    ("test count mismatch", with_file(TEST_LABELS, idx_bytes(labels(4))), "6 images but 4"),
    (
        "test images 3x3",
        with_file(TEST_IMAGES, idx_bytes(images(N_TEST, side=3))),
        f"{TEST_IMAGES}: 3x3 images, but {IMAGES} holds 4x4",
    ),
    (
        "test images 28x28",
        with_file(TEST_IMAGES, idx_bytes(images(N_TEST, side=28))),
        "28x28 images, but",
    ),
    (
        "negative labels",
        with_file(LABELS, idx_bytes(labels().astype(np.int8) - 1, code=INT8)),
        f"{LABELS}: 10 negative labels",
    ),
    (
        "float labels",
        with_file(LABELS, idx_bytes(labels().astype(np.float32), code=FLOAT32)),
        "labels must be integers",
    ),
    (
        "NaN pixels float32",
        with_file(IMAGES, idx_bytes(NAN_IMAGES, code=FLOAT32)),
        f"{IMAGES}: 3 NaN/inf pixel values",
    ),
    (
        "inf pixels float64",
        with_file(IMAGES, idx_bytes(INF_IMAGES, code=FLOAT64)),
        "1 NaN/inf pixel values",
    ),
    (
        "float64 beyond float32",
        with_file(IMAGES, idx_bytes(HUGE_IMAGES, code=FLOAT64)),
        "1 NaN/inf pixel values",
    ),
    (
        "NaN test pixels",
        with_file(TEST_IMAGES, idx_bytes(NAN_IMAGES[:N_TEST], code=FLOAT32)),
        f"{TEST_IMAGES}: 3 NaN/inf",
    ),
    ("folder as images", with_file(IMAGES, None), f"{IMAGES}: is a folder"),
    ("folder as labels", with_file(LABELS, None), f"{LABELS}: is a folder"),
    ("folder as gz", with_file(f"{IMAGES}.gz", None, drop=(IMAGES,)), "is a folder"),
    ("labels missing", with_file(IMAGES, GOOD_IMAGES, drop=(LABELS,)), "no train-labels"),
    (
        "test labels missing",
        with_file(IMAGES, GOOD_IMAGES, drop=(TEST_LABELS,)),
        "no t10k-labels-idx1-ubyte",
    ),
    (
        "test images damaged",
        with_file(TEST_IMAGES, idx_bytes(images(N_TEST))[:-5]),
        f"{TEST_IMAGES}: truncated",
    ),
]


@pytest.mark.parametrize(
    ("files", "fragment"), [c[1:] for c in IDX_CASES], ids=[c[0] for c in IDX_CASES]
)
def test_a_bad_idx_file_is_refused_naming_it(tmp_path, files, fragment):
    folder = write_folder(tmp_path / "mnist", files())
    module = IdxDataModule(path=str(folder))
    with pytest.raises(ConfigError) as info:
        module.input_shape  # noqa: B018 - the property loads the files
    assert info.value.key == "path"
    assert fragment in info.value.message
    assert "\n" not in str(info.value)


def test_an_unreadable_idx_file_is_refused(tmp_path, monkeypatch):
    folder = write_folder(tmp_path, valid_files())
    (folder / LABELS).chmod(0)
    if os.geteuid() == 0:  # root reads a file of mode 000: refuse the read as the OS would
        read_bytes = Path.read_bytes

        def refused(path: Path) -> bytes:
            if path.name == LABELS:
                raise PermissionError(13, "Permission denied", str(path))
            return read_bytes(path)

        monkeypatch.setattr(Path, "read_bytes", refused)
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=str(folder)).input_shape  # noqa: B018
    assert info.value.key == "path"
    assert info.value.message == f"{LABELS}: cannot be read (permission denied)"


def test_a_class_with_one_sample_cannot_be_split(tmp_path):
    files = with_file(LABELS, idx_bytes(SINGLE_OF_A_CLASS))()
    module = IdxDataModule(path=str(write_folder(tmp_path, files)))
    with pytest.raises(ConfigError) as info:
        module.input_shape  # noqa: B018
    assert info.value.key == ""
    assert "class 7 has 1 sample" in info.value.message


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"path": None}, "path", "set it to the folder"),
        ({"path": ""}, "path", "set it to the folder"),
        ({"path": ["a"]}, "path", "must be a non-empty string"),
        ({"path": "MISSING"}, "path", "is not a folder"),
        ({"path": "FILE"}, "path", "is not a folder"),
        ({"path": "FOLDER\0x"}, "path", "is not a folder"),
        ({"train_prefix": "t10k"}, "test_prefix", "must differ from train_prefix"),
        ({"train_prefix": ""}, "train_prefix", "non-empty string"),
        ({"test_prefix": True}, "test_prefix", "non-empty string"),
        ({"train_prefix": "mnist"}, "path", "no mnist-images-idx3-ubyte"),
    ],
    ids=[
        "None",
        "empty",
        "list",
        "missing",
        "a file",
        "NUL",
        "same prefixes",
        "empty prefix",
        "bool prefix",
        "no such prefix",
    ],
)
def test_bad_idx_arguments_are_refused_at_construction(tmp_path, kwargs, key, fragment):
    folder = write_folder(tmp_path / "mnist", valid_files())
    (tmp_path / "file").write_text("x")
    names = {"MISSING": tmp_path / "missing", "FILE": tmp_path / "file", "FOLDER": folder}
    given = {"path": str(folder), **kwargs}
    if isinstance(given["path"], str) and given["path"]:
        head, _, tail = given["path"].partition("\0")
        given["path"] = str(names.get(head, head)) + ("\0" + tail if tail else "")
    with pytest.raises(ConfigError) as info:
        IdxDataModule(**given)
    assert info.value.key == key
    assert fragment in info.value.message


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_a_valid_idx_folder_loads(tmp_path, gz):
    files = valid_files()
    if gz:
        files = {f"{name}.gz": gzipped(raw) for name, raw in files.items()}
    module = IdxDataModule(path=write_folder(tmp_path, files), batch_size=4)  # a Path is fine
    assert module.input_shape == (1, SIDE, SIDE)
    assert module.num_classes == CLASSES
    assert len(module.splits["test"].x) == N_TEST
    module.setup()
    assert len(module.train_dataloader()) > 0


def test_valid_float_and_int8_idx_files_load(tmp_path):
    files = {
        **valid_files(),
        IMAGES: idx_bytes(FLOAT_IMAGES, code=FLOAT64),
        LABELS: idx_bytes(labels().astype(np.int8), code=INT8),
        TEST_IMAGES: idx_bytes(FLOAT_IMAGES[:N_TEST], code=FLOAT32),
    }
    module = IdxDataModule(path=str(write_folder(tmp_path, files)), test_prefix=2019)
    # test_prefix 2019 (a number on the command line) finds no test files: test comes from train
    assert module.input_shape == (1, SIDE, SIDE)
    assert sum(len(s.x) for s in module.splits.values()) == N_TRAIN


# --- arguments of every data class --------------------------------------------------------------

BIG = 10**12
ARGUMENT_CASES = [
    (DigitsDataModule, {"layout": "bogus"}, "layout", "unknown value 'bogus'"),
    (DigitsDataModule, {"batch_size": 0}, "batch_size", "integer >= 1"),
    (DigitsDataModule, {"batch_size": -8}, "batch_size", "integer >= 1"),
    (DigitsDataModule, {"batch_size": "abc"}, "batch_size", "'abc'"),
    (DigitsDataModule, {"val_fraction": 0.0}, "val_fraction", "(0, 1)"),
    (DigitsDataModule, {"val_fraction": math.nan}, "val_fraction", "nan"),
    (DigitsDataModule, {"val_fraction": "x"}, "val_fraction", "'x'"),
    (DigitsDataModule, {"test_fraction": -0.1}, "test_fraction", "(0, 1)"),
    (DigitsDataModule, {"test_fraction": 1.0}, "test_fraction", "(0, 1)"),
    (DigitsDataModule, {"val_fraction": 0.6, "test_fraction": 0.4}, "val_fraction", "< 1"),
    (DigitsDataModule, {"train_fraction": 0.0}, "train_fraction", "(0, 1]"),
    (DigitsDataModule, {"train_fraction": 1.5}, "train_fraction", "(0, 1]"),
    (DigitsDataModule, {"train_fraction": math.inf}, "train_fraction", "inf"),
    (DigitsDataModule, {"label_noise": 1.5}, "label_noise", "[0, 1]"),
    (DigitsDataModule, {"label_noise": -0.1}, "label_noise", "[0, 1]"),
    (DigitsDataModule, {"label_noise": math.nan}, "label_noise", "nan"),
    (DigitsDataModule, {"split_seed": -1}, "split_seed", "in [0, 4294967295]"),
    (DigitsDataModule, {"split_seed": 2**32}, "split_seed", "in [0, 4294967295]"),
    (DigitsDataModule, {"split_seed": 1.5}, "split_seed", "integer"),
    (DigitsDataModule, {"data_seed": -3}, "data_seed", "in [0, 4294967295]"),
    (DigitsDataModule, {"shuffle_seed": -1}, "shuffle_seed", "in [0, 4294967295]"),
    (DigitsDataModule, {"shuffle_seed": 2**64}, "shuffle_seed", "in [0, 4294967295]"),
    (DigitsDataModule, {"standardize": "abc"}, "standardize", "true or false"),
    (DigitsDataModule, {"standardize": 1}, "standardize", "true or false"),
    (FunctionDataModule, {"standardize_target": "no"}, "standardize_target", "true or false"),
    (FunctionDataModule, {"label_noise": 0.1}, "label_noise", "classification data only"),
    (MoonsDataModule, {"n_samples": 0}, "n_samples", "integer in [1,"),
    (MoonsDataModule, {"n_samples": -5}, "n_samples", "integer in [1,"),
    (MoonsDataModule, {"n_samples": 2.5}, "n_samples", "integer"),
    (MoonsDataModule, {"n_samples": "many"}, "n_samples", "'many'"),
    (MoonsDataModule, {"n_samples": BIG}, "n_samples", "integer in [1,"),
    (MoonsDataModule, {"noise": -1.0}, "noise", "[0, inf]"),
    (MoonsDataModule, {"noise": math.nan}, "noise", "nan"),
    (MoonsDataModule, {"noise": math.inf}, "noise", "inf"),
    (MoonsDataModule, {"noise": "x"}, "noise", "'x'"),
    (FunctionDataModule, {"function": "cosh"}, "function", "'cosh'"),
    (FunctionDataModule, {"n_samples": 0}, "n_samples", "integer in [1,"),
    (FunctionDataModule, {"noise": -0.5}, "noise", "[0, inf]"),
    (FunctionDataModule, {"noise": math.nan}, "noise", "nan"),
    (FunctionDataModule, {"low": math.nan}, "low", "nan"),
    (FunctionDataModule, {"high": "a"}, "high", "'a'"),
    (FunctionDataModule, {"low": 2.0, "high": 2.0}, "low", "must be below high"),
    (FunctionDataModule, {"low": -1e308, "high": 1e308}, "high", "overflows"),
    (RegressionDataModule, {"n_samples": 0}, "n_samples", "integer in [1,"),
    (RegressionDataModule, {"n_features": 0}, "n_features", "integer in [1,"),
    (RegressionDataModule, {"n_informative": -1}, "n_informative", "in [0, 20]"),
    (RegressionDataModule, {"n_informative": 21}, "n_informative", "in [0, 20]"),
    (RegressionDataModule, {"noise": -10.0}, "noise", "[0, inf]"),
    (RegressionDataModule, {"n_samples": 10**6, "n_features": 10**4}, "n_samples", "values"),
    (VolumesDataModule, {"n_samples": 0}, "n_samples", "integer in [1,"),
    (VolumesDataModule, {"size": 1}, "size", "in [2, 256]"),
    (VolumesDataModule, {"size": 10**4}, "size", "in [2, 256]"),
    (VolumesDataModule, {"noise": -1.0}, "noise", "[0, inf]"),
    (VolumesDataModule, {"amplitude": math.nan}, "amplitude", "nan"),
    (VolumesDataModule, {"n_samples": 10**7}, "n_samples", "voxels"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "key", "fragment"),
    ARGUMENT_CASES,
    ids=[f"{c[0].__name__[:-10]}-{'-'.join(map(str, c[1].values()))}" for c in ARGUMENT_CASES],
)
def test_a_bad_argument_is_refused_at_construction(cls, kwargs, key, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert info.value.key == key
    assert fragment in info.value.message


# --- split sizes: every split gets each class, training gets a batch ----------------------------

SPLIT_CASES = [
    (DigitsDataModule, {"val_fraction": 0.001}, "val_fraction", "2 validation samples"),
    (DigitsDataModule, {"val_fraction": 0.005}, "val_fraction", "each of the 10 classes"),
    (DigitsDataModule, {"test_fraction": 0.001}, "test_fraction", "2 test samples of 1797"),
    (DigitsDataModule, {"train_fraction": 0.0001}, "train_fraction", "keeps 1 of 1077"),
    (VolumesDataModule, {"n_samples": 60, "val_fraction": 0.01}, "val_fraction", "3 classes"),
    (MoonsDataModule, {"n_samples": 5}, "test_fraction", "1 test samples of 5"),
    (MoonsDataModule, {"n_samples": 40, "train_fraction": 0.01}, "train_fraction", "keeps 1"),
    (FunctionDataModule, {"n_samples": 3}, "", "the training split has 1 sample"),
    (
        RegressionDataModule,
        {"n_samples": 100, "val_fraction": 0.5, "test_fraction": 0.49},
        "",
        "the training split has 1 sample",
    ),
    (
        RegressionDataModule,
        {"n_samples": 1},
        "test_fraction",
        "leaves 0 of 1 samples in the data set",
    ),
    (MoonsDataModule, {"n_samples": 3}, "", "has 1 sample in the data set"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "key", "fragment"),
    SPLIT_CASES,
    ids=[f"{c[0].__name__[:-10]}-{'-'.join(map(str, c[1].values()))}" for c in SPLIT_CASES],
)
def test_a_split_too_small_is_refused_before_training(cls, kwargs, key, fragment):
    module = cls(**kwargs)
    with pytest.raises(ConfigError) as info:
        module.input_shape  # noqa: B018 - the property splits the data
    assert info.value.key == key
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("key", "too_small"),
    [("val_fraction", 0.001), ("test_fraction", 0.001), ("train_fraction", 0.0001)],
)
def test_the_suggested_fraction_is_just_enough(key, too_small):
    with pytest.raises(ConfigError) as info:
        DigitsDataModule(layout="flat", **{key: too_small}).input_shape  # noqa: B018
    suggested = float(re.search(r"raise \w+ to at least ([0-9.e-]+)", info.value.message)[1])
    module = DigitsDataModule(layout="flat", **{key: suggested})
    sizes = {name: len(split.y) for name, split in module.splits.items()}
    split = {"val_fraction": "val", "test_fraction": "test", "train_fraction": "train"}[key]
    if key == "train_fraction":
        assert sizes["train"] >= 2
    else:  # the smallest split that holds each class, and not far above it
        assert set(module.splits[split].y.tolist()) == set(range(10))
        assert 10 <= sizes[split] <= 12
    # Half the suggestion is refused again: the checks are not looser than needed.
    with pytest.raises(ConfigError):
        DigitsDataModule(layout="flat", **{key: suggested / 2}).input_shape  # noqa: B018


def test_the_training_split_must_give_a_batch_on_every_process():
    module = MoonsDataModule(n_samples=20, train_fraction=0.2, batch_size=4)
    assert len(module.splits["train"].x) == 2  # enough on one process
    module.setup()
    assert len(module.train_dataloader()) == 1
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=torch.device("cpu")), global_rank=0, world_size=2
    )
    module.trainer = trainer
    with pytest.raises(ConfigError) as info:
        module.setup("fit")
    assert info.value.key == "" and "no batch on 2 processes" in info.value.message


# --- NaN / inf and bad labels from any load_arrays ----------------------------------------------


class Arrays(TensorDataModule):
    """A data module over given arrays."""

    def __init__(self, x, y, task: str = "classification", **kwargs) -> None:
        self.task = task
        super().__init__(**kwargs)
        self.x, self.y = x, y

    def load_arrays(self):
        return self.x, self.y


def _x(n: int = 60, bad: dict | None = None) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, 3))
    for index, value in (bad or {}).items():
        x.flat[index] = value
    return x


Y_CLASSES = np.arange(60) % 3
ARRAY_CASES = [
    ("NaN inputs", _x(bad={0: np.nan, 5: np.nan, 9: np.nan}), Y_CLASSES, "inputs contain 3 NaN"),
    ("inf inputs", _x(bad={7: np.inf}), Y_CLASSES, "inputs contain 1 NaN/inf"),
    ("-inf inputs", _x(bad={7: -np.inf, 8: np.inf}), Y_CLASSES, "inputs contain 2 NaN/inf"),
    ("NaN labels", _x(), np.where(Y_CLASSES == 2, np.nan, Y_CLASSES), "targets contain 20 NaN"),
    ("negative labels", _x(), Y_CLASSES - 1, "class labels must be >= 0, found -1"),
    ("fractional labels", _x(), Y_CLASSES + 0.5, "whole numbers"),
    ("string inputs", np.array([["a"]] * 60), Y_CLASSES, "inputs must be numbers"),
    ("length mismatch", _x(), Y_CLASSES[:50], "60 inputs but 50 targets"),
    ("no samples", _x(0), Y_CLASSES[:0], "no samples"),
    ("beyond float32", _x(bad={4: 1e39}), Y_CLASSES, "overflow float32"),
]


@pytest.mark.parametrize(
    ("x", "y", "fragment"), [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES]
)
def test_bad_arrays_are_refused_before_training(x, y, fragment):
    with pytest.raises(ConfigError) as info:
        Arrays(x, y, standardize=False).input_shape  # noqa: B018
    assert info.value.key == ""
    assert fragment in info.value.message


@pytest.mark.parametrize(
    "y",
    [np.full(60, np.inf), np.where(np.arange(60) == 3, np.nan, 1.0)],
    ids=["inf", "NaN"],
)
def test_non_finite_regression_targets_are_refused(y):
    with pytest.raises(ConfigError) as info:
        Arrays(_x(), y, task="regression").input_shape  # noqa: B018
    assert info.value.key == "" and "targets contain" in info.value.message


def test_a_function_that_overflows_is_refused():
    module = FunctionDataModule(function="cubic", low=-1e200, high=1e200, n_samples=100)
    with pytest.raises(ConfigError) as info:
        module.input_shape  # noqa: B018
    assert info.value.key == "" and "NaN/inf" in info.value.message


def test_valid_arrays_load():
    module = Arrays(_x(), Y_CLASSES.astype(np.float64))  # whole-number float labels are fine
    assert module.input_shape == (3,) and module.num_classes == 3


# --- whole runs: the config path in front, nothing trained --------------------------------------

NAN_FOLDER = {**valid_files(), IMAGES: idx_bytes(NAN_IMAGES, code=FLOAT32)}
TRUNCATED_FOLDER = {**valid_files(), IMAGES: GOOD_IMAGES[:-1]}
RUN_CASES = [
    ("idx truncated", ["data=idx"], TRUNCATED_FOLDER, "data.path", "truncated"),
    ("idx NaN pixels", ["data=idx"], NAN_FOLDER, "data.path", "3 NaN/inf pixel values"),
    ("tiny val_fraction", ["data.val_fraction=0.001"], None, "data.val_fraction", "validation"),
    ("tiny train_fraction", ["data.train_fraction=0.0001"], None, "data.train_fraction", "keeps"),
    ("moons noise nan", ["data=moons", "data.noise=nan"], None, "data.noise", "nan"),
    ("negative split_seed", ["data.split_seed=-1"], None, "data.split_seed", "integer"),
    ("standardize abc", ["data.standardize=abc"], None, "data.standardize", "true or false"),
]


@pytest.mark.parametrize(
    ("overrides", "files", "key", "fragment"),
    [c[1:] for c in RUN_CASES],
    ids=[c[0] for c in RUN_CASES],
)
def test_a_run_with_bad_data_stops_before_training(tmp_path, overrides, files, key, fragment):
    if files is not None:
        overrides = [*overrides, f"data.path={write_folder(tmp_path / 'mnist', files)}"]
    out = tmp_path / "run"
    small = ["model=mlp", "model.width=8", "trainer.max_epochs=1", "logger=none"]
    cfg = compose_config([*small, *overrides], out)
    with pytest.raises(ConfigError) as info:
        run_one(cfg)
    assert info.value.key == key
    assert fragment in info.value.message
    assert not (out / "metrics.json").exists()
    assert not list(out.rglob("*.ckpt"))


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_train_py_prints_one_line_for_a_damaged_file(tmp_path):
    folder = write_folder(tmp_path / "mnist", TRUNCATED_FOLDER)
    result = run_train_py(
        ["data=idx", f"data.path={folder}", "trainer.max_epochs=1", "logger=none"], cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("reglab: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"reglab: error: data.path: {IMAGES}: truncated")
    assert not list(tmp_path.rglob("metrics.json"))


def test_a_batch_larger_than_the_data_is_one_batch():
    module = MoonsDataModule(n_samples=50, batch_size=10**9)
    module.setup()
    assert len(module.train_dataloader()) == 1
    assert len(next(iter(module.train_dataloader()))[0]) == len(module.splits["train"].x)
