"""Data modules and the in-memory loader: IDX files, digits, synthetic sets, splits,
train-only standardization, batching, shuffling and sharding.

Embedded sequence data (issue 11): digits and IDX in the image / flat / sequence / tokens
layouts, the denoising target, the adding problem, and their one-line configuration errors.
"""

from __future__ import annotations

import gzip
import inspect
import math
import struct
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from conftest import compose_config, quiet_trainer
from reglab.data import (
    AddingDataModule,
    DigitsDataModule,
    FunctionDataModule,
    IdxDataModule,
    MoonsDataModule,
    RegressionDataModule,
    VolumesDataModule,
    read_idx,
)
from reglab.data.loader import TensorBatchLoader
from reglab.errors import ConfigError
from reglab.run import run_one

N_DIGITS = 1797


# --- IDX files ----------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` (uint8) as an IDX file: 0, 0, dtype 0x08, ndim, big-endian int32 dims, data.

    A `.gz` suffix writes it gzipped, as MNIST is distributed.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def make_pair(rng: np.random.Generator, n: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """n random 6x6 uint8 images and balanced labels 0..classes-1."""
    images = rng.integers(0, 256, size=(n, 6, 6), dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    return images, labels


def write_mnist_like(
    folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool
) -> None:
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_round_trips(tmp_path, gz):
    rng = np.random.default_rng(0)
    images, labels = make_pair(rng, 7)
    ext = ".gz" if gz else ""
    read_images = read_idx(write_idx(tmp_path / f"images-idx3-ubyte{ext}", images))
    read_labels = read_idx(write_idx(tmp_path / f"labels-idx1-ubyte{ext}", labels))
    assert read_images.shape == (7, 6, 6) and read_images.dtype == np.uint8
    assert read_labels.shape == (7,)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    if gz:  # really compressed, not a plain file with a .gz name
        assert (tmp_path / "images-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_read_idx_rejects_a_bad_magic_number(tmp_path):
    good = write_idx(tmp_path / "good-idx1-ubyte", np.arange(5, dtype=np.uint8))
    raw = good.read_bytes()
    for bad_header in (b"\x01\x00", b"\x00\x01"):
        bad = tmp_path / "bad"
        bad.write_bytes(bad_header + raw[2:])
        with pytest.raises(ValueError, match="magic"):
            read_idx(bad)
    bad_dtype = tmp_path / "bad_dtype"
    bad_dtype.write_bytes(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad_dtype)
    truncated = tmp_path / "truncated"
    truncated.write_bytes(raw[:-1])
    with pytest.raises(ValueError):
        read_idx(truncated)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError):
        read_idx(empty)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_module_uses_the_t10k_pair_as_test_split(tmp_path, gz):
    rng = np.random.default_rng(1)
    train_images, train_labels = make_pair(rng, 40)
    test_images, test_labels = make_pair(rng, 15)
    write_mnist_like(tmp_path, "train", train_images, train_labels, gz)
    write_mnist_like(tmp_path, "t10k", test_images, test_labels, gz)

    dm = IdxDataModule(path=str(tmp_path), standardize=False, batch_size=8)
    splits = dm.splits
    assert len(splits["test"].x) == 15
    assert len(splits["train"].x) + len(splits["val"].x) == 40
    assert len(splits["val"].x) == math.ceil(dm.val_fraction * 40)
    # The test split is the t10k pair itself, in file order, scaled to [0, 1].
    np.testing.assert_array_equal(splits["test"].y.numpy(), test_labels)
    np.testing.assert_allclose(splits["test"].x.numpy(), test_images[:, None] / 255.0, rtol=1e-6)
    assert dm.input_shape == (1, 6, 6)
    assert dm.num_classes == 4 and dm.task == "classification"
    assert splits["train"].x.dtype == torch.float32 and splits["train"].y.dtype == torch.long


def test_idx_module_without_test_files_splits_test_out_of_train(tmp_path):
    rng = np.random.default_rng(2)
    images, labels = make_pair(rng, 50)
    write_mnist_like(tmp_path, "train", images, labels, gz=True)
    dm = IdxDataModule(path=str(tmp_path), standardize=False)
    sizes = {k: len(s.x) for k, s in dm.splits.items()}
    assert sum(sizes.values()) == 50
    assert sizes["test"] == math.ceil(dm.test_fraction * 50)
    assert sizes["val"] > 0 and sizes["train"] > sizes["val"]
    # Every training image ends up in exactly one split.
    all_x = torch.cat([s.x for s in dm.splits.values()]).reshape(50, -1).numpy()
    expected = images.reshape(50, -1) / 255.0
    np.testing.assert_allclose(_sorted_rows(all_x), _sorted_rows(expected), rtol=1e-6)


def test_idx_module_accepts_the_dotted_file_names(tmp_path):
    rng = np.random.default_rng(3)
    images, labels = make_pair(rng, 20)
    write_idx(tmp_path / "train-images.idx3-ubyte", images)
    write_idx(tmp_path / "train-labels.idx1-ubyte", labels)
    assert sum(len(s.x) for s in IdxDataModule(path=str(tmp_path)).splits.values()) == 20


def test_idx_module_configuration_errors(tmp_path):
    for path in (None, ""):
        with pytest.raises(ConfigError) as info:
            IdxDataModule(path=path)
        assert info.value.key == "path"
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=str(tmp_path / "missing"))
    assert info.value.key == "path" and "missing" in str(info.value)
    # A folder without the files fails at construction, before any training.
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=str(tmp_path))
    assert info.value.key == "path" and "train-images-idx3-ubyte" in str(info.value)

    # Images without labels, or a count mismatch, fail when the arrays are loaded.
    rng = np.random.default_rng(4)
    images, labels = make_pair(rng, 10)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    dm = IdxDataModule(path=str(tmp_path))
    with pytest.raises(ConfigError) as info:
        dm.splits  # noqa: B018 - the property loads the files
    assert info.value.key == "path" and "labels" in str(info.value)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:9])
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=str(tmp_path)).splits  # noqa: B018
    assert info.value.key == "path" and "10 images but 9 labels" in str(info.value)


# --- digits -------------------------------------------------------------------------------------


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1)
    return a[np.lexsort(a.T[::-1])]


@pytest.fixture(scope="module")
def digits_raw():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float32), digits.target


@pytest.mark.parametrize(("layout", "shape"), [("image", (1, 8, 8)), ("flat", (64,))])
def test_digits_layout_shapes_and_classes(layout, shape):
    dm = DigitsDataModule(layout=layout)
    assert dm.input_shape == shape
    assert dm.num_classes == 10 == dm.num_outputs
    assert dm.task == "classification"
    sizes = {k: len(s.x) for k, s in dm.splits.items()}
    assert sum(sizes.values()) == N_DIGITS
    assert sizes["test"] == pytest.approx(0.2 * N_DIGITS, abs=1)
    assert sizes["val"] == pytest.approx(0.2 * N_DIGITS, abs=1)
    for split in dm.splits.values():
        assert split.x.shape[1:] == shape
        assert len(split.x) == len(split.y)
        assert split.y.dtype == torch.long


def test_digits_splits_partition_the_data_set(digits_raw):
    x_raw, y_raw = digits_raw
    dm = DigitsDataModule(layout="flat", standardize=False)
    rows = np.concatenate(
        [np.concatenate([s.x.numpy(), s.y.numpy()[:, None]], axis=1) for s in dm.splits.values()]
    )
    expected = np.concatenate([x_raw, y_raw[:, None]], axis=1)
    # Same multiset of (image, label) rows: every sample in exactly one split.
    np.testing.assert_array_equal(_sorted_rows(rows), _sorted_rows(expected))
    # Pairwise disjoint as sets of distinct rows (digits holds no duplicate images).
    keys = {k: {r.tobytes() for r in s.x.numpy()} for k, s in dm.splits.items()}
    n_distinct = len({r.tobytes() for r in x_raw})
    assert len(keys["train"] | keys["val"] | keys["test"]) == n_distinct
    assert sum(len(v) for v in keys.values()) == n_distinct


@pytest.mark.parametrize(
    "kwargs",
    [{"label_noise": 0.5}, {"train_fraction": 0.3}, {"target": "denoise"}, {"layout": "tokens"}],
)
def test_no_run_changes_the_digits_the_next_run_reads(digits_raw, kwargs):
    # The bundled file is parsed once per process (a sweep's jobs share it): a module that
    # degrades its data, and a run writing into its batches in place, leave it as sklearn has it.
    for split in DigitsDataModule(**kwargs).splits.values():
        split.x.add_(1)
        split.y.add_(1)
    x_raw, y_raw = digits_raw
    fresh = DigitsDataModule(layout="flat", standardize=False).splits
    rows = np.concatenate([np.concatenate([s.x, s.y[:, None]], axis=1) for s in fresh.values()])
    expected = np.concatenate([x_raw, y_raw[:, None]], axis=1)
    np.testing.assert_array_equal(_sorted_rows(rows), _sorted_rows(expected))


def test_digits_splits_are_stratified():
    dm = DigitsDataModule(layout="flat")
    for split in dm.splits.values():
        counts = torch.bincount(split.y, minlength=10).float()
        share = counts / counts.sum()
        assert share.min() > 0.08 and share.max() < 0.12


def test_digits_splits_depend_only_on_split_seed():
    a = DigitsDataModule(split_seed=0, shuffle_seed=0).splits
    b = DigitsDataModule(split_seed=0, shuffle_seed=5).splits
    c = DigitsDataModule(split_seed=1).splits
    for name in ("train", "val", "test"):
        assert torch.equal(a[name].x, b[name].x)
        assert torch.equal(a[name].y, b[name].y)
    assert not torch.equal(a["test"].y, c["test"].y)
    assert not torch.equal(a["train"].x[:50], c["train"].x[:50])


def test_images_are_standardized_per_channel_not_per_pixel():
    raw = DigitsDataModule(layout="image", standardize=False).splits
    std = DigitsDataModule(layout="image").splits
    x_train = std["train"].x.double()
    assert abs(x_train.mean().item()) < 1e-6 and abs(x_train.std(unbiased=False).item() - 1) < 1e-5
    # One affine map for every pixel: blank pixels stay equal to each other, and the ranking of
    # intensities is kept, so a shifted image is still a standardized image.
    mean, scale = raw["train"].x.double().mean(), raw["train"].x.double().std(unbiased=False)
    for name in ("train", "test"):
        expected = (raw[name].x.double() - mean) / scale
        torch.testing.assert_close(std[name].x.double(), expected, atol=1e-5, rtol=0)
    assert std["train"].x.abs().max() < 5  # per-pixel statistics give values above 20 here


def test_digits_standardization_uses_training_statistics_only():
    raw = DigitsDataModule(layout="flat", standardize=False).splits
    std = DigitsDataModule(layout="flat").splits
    for split in std.values():
        assert torch.isfinite(split.x).all()

    x_train = std["train"].x.double()
    torch.testing.assert_close(
        x_train.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5, rtol=0
    )
    feature_std = x_train.std(0, unbiased=False)
    constant = raw["train"].x.std(0) == 0
    assert constant.any()  # digits has always-blank border pixels
    torch.testing.assert_close(
        feature_std[~constant],
        torch.ones(int((~constant).sum()), dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    assert torch.equal(feature_std[constant], torch.zeros(int(constant.sum()), dtype=torch.float64))

    # val/test are transformed with the training mean/std, so they are not exactly standardized.
    mean = raw["train"].x.double().mean(0)
    scale = raw["train"].x.double().std(0, unbiased=False)
    scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
    for name in ("val", "test"):
        expected = (raw[name].x.double() - mean) / scale
        torch.testing.assert_close(std[name].x.double(), expected, atol=1e-4, rtol=1e-4)
        assert std[name].x.double().mean(0).abs().max() > 1e-3


def test_digits_bad_layout_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        DigitsDataModule(layout="grid")
    assert info.value.key == "layout"
    message = str(info.value)
    assert "layout" in message and "'grid'" in message
    assert "image" in message and "flat" in message


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction"),
    ],
)
def test_bad_split_settings_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        DigitsDataModule(**kwargs)
    assert info.value.key == key


# --- synthetic sets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "input_shape"),
    [
        (FunctionDataModule, {"function": "sin", "n_samples": 200}, (1,)),
        (FunctionDataModule, {"function": "thermometer", "n_samples": 200}, (1,)),
        (FunctionDataModule, {"function": "cubic", "n_samples": 200}, (1,)),
        (RegressionDataModule, {"n_samples": 200, "n_features": 7, "n_informative": 3}, (7,)),
    ],
)
def test_regression_modules(cls, kwargs, input_shape):
    dm = cls(**kwargs)
    assert dm.task == "regression"
    assert dm.num_outputs == 1
    assert dm.num_classes is None
    assert dm.input_shape == input_shape
    splits = dm.splits
    assert sum(len(s.x) for s in splits.values()) == 200
    for split in splits.values():
        assert split.y.dtype == torch.float32
        assert split.y.shape == (len(split.x), 1)
        assert torch.isfinite(split.x).all() and torch.isfinite(split.y).all()
    # Targets standardized with training statistics.
    y = splits["train"].y.double()
    assert abs(float(y.mean())) < 1e-5
    assert float(y.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_function_module_targets_follow_the_function_when_not_standardized():
    dm = FunctionDataModule(
        function="cubic", noise=0.0, standardize=False, standardize_target=False, n_samples=100
    )
    for split in dm.splits.values():
        x = split.x.double()
        torch.testing.assert_close(split.y.double(), x**3 - 2 * x, atol=1e-4, rtol=1e-4)
        assert x.min() >= -3.0 and x.max() <= 3.0


def test_bad_function_settings_are_config_errors():
    with pytest.raises(ConfigError) as info:
        FunctionDataModule(function="cosh")
    assert info.value.key == "function"
    assert "'cosh'" in str(info.value)
    for valid in ("sin", "thermometer", "cubic"):
        assert valid in str(info.value)
    with pytest.raises(ConfigError) as info:
        FunctionDataModule(low=1.0, high=1.0)
    assert info.value.key == "low"


def test_moons_module():
    dm = MoonsDataModule(n_samples=200)
    assert dm.task == "classification"
    assert dm.num_classes == 2 == dm.num_outputs
    assert dm.input_shape == (2,)
    assert set(torch.cat([s.y for s in dm.splits.values()]).tolist()) == {0, 1}
    assert sum(len(s.x) for s in dm.splits.values()) == 200


def test_volumes_module():
    dm = VolumesDataModule(n_samples=90)
    assert dm.input_shape == (1, 8, 8, 8)
    assert dm.num_classes == 3 == dm.num_outputs
    assert sum(len(s.x) for s in dm.splits.values()) == 90
    # The label is the axis along which the bright bar runs.
    raw = VolumesDataModule(n_samples=30, noise=0.0, standardize=False)
    x, y = raw.load_arrays()
    for volume, axis in zip(x[:, 0], y, strict=True):
        assert volume.sum(axis=int(axis)).max() == pytest.approx(8 * raw.amplitude)
        assert np.count_nonzero(volume) == 8


# --- TensorBatchLoader --------------------------------------------------------------------------


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n)
    x = torch.stack([y.float(), -y.float()], dim=1)  # x row i encodes i
    return x, y


def _epoch(loader: TensorBatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_singleton", "sizes"),
    [
        (12, 4, False, [4, 4, 4]),
        (10, 4, False, [4, 4, 2]),
        (10, 4, True, [4, 4, 2]),
        (9, 4, False, [4, 4, 1]),
        (9, 4, True, [4, 4]),
        (3, 8, False, [3]),
        (1, 8, True, []),
    ],
)
def test_loader_batch_sizes(n, batch_size, drop_singleton, sizes):
    x, y = _data(n)
    loader = TensorBatchLoader(x, y, batch_size, drop_singleton=drop_singleton)
    batches = _epoch(loader)
    assert len(loader) == len(sizes)
    assert [len(bx) for bx, _ in batches] == sizes
    assert [len(by) for _, by in batches] == sizes
    if batches:  # unshuffled: in order
        assert torch.equal(torch.cat([by for _, by in batches]), torch.arange(sum(sizes)))


def test_loader_rejects_misaligned_tensors():
    with pytest.raises(ValueError):
        TensorBatchLoader(torch.zeros(5, 2), torch.zeros(4), 2)


def test_loader_shuffles_a_new_permutation_each_epoch_keeping_x_and_y_aligned():
    x, y = _data(50)
    loader = TensorBatchLoader(x, y, 8, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        batches = _epoch(loader)
        assert len(batches) == len(loader) == 7
        order = torch.cat([by for _, by in batches])
        assert torch.equal(torch.sort(order).values, torch.arange(50))  # a permutation
        for bx, by in batches:  # x and y moved together
            assert torch.equal(bx[:, 0], by.float())
            assert torch.equal(bx[:, 1], -by.float())
        orders.append(order)
    assert not torch.equal(orders[0], torch.arange(50))
    assert not torch.equal(orders[0], orders[1])
    assert not torch.equal(orders[1], orders[2])

    same = TensorBatchLoader(x, y, 8, shuffle=True, seed=3)
    for expected in orders:
        assert torch.equal(torch.cat([by for _, by in _epoch(same)]), expected)
    other = TensorBatchLoader(x, y, 8, shuffle=True, seed=4)
    assert not torch.equal(torch.cat([by for _, by in _epoch(other)]), orders[0])


def test_loader_without_shuffle_keeps_order_every_epoch():
    x, y = _data(10)
    loader = TensorBatchLoader(x, y, 3)
    for _ in range(2):
        assert torch.equal(torch.cat([by for _, by in _epoch(loader)]), y)


@pytest.mark.parametrize("n", [20, 21])
def test_loader_shards_are_disjoint_and_cover_each_epoch(n):
    x, y = _data(n)
    ranks = [
        TensorBatchLoader(x, y, 4, shuffle=True, seed=7, rank=r, world_size=2) for r in range(2)
    ]
    previous = None
    for _ in range(3):
        shards = [torch.cat([by for _, by in _epoch(loader)]) for loader in ranks]
        for loader, shard in zip(ranks, shards, strict=True):
            assert len(loader) == math.ceil(len(shard) / 4)
        assert sorted(len(s) for s in shards) == sorted([n // 2, n - n // 2])
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
        assert torch.equal(torch.sort(torch.cat(shards)).values, torch.arange(n))
        if previous is not None:
            assert not torch.equal(shards[0], previous)
        previous = shards[0]


@pytest.mark.parametrize(("n", "batch_size"), [(5, 2), (7, 2), (21, 4)])
@pytest.mark.parametrize("drop_singleton", [False, True])
def test_padded_training_shards_give_every_rank_the_same_number_of_steps(
    n, batch_size, drop_singleton
):
    # DDP all-reduces gradients every step: a rank with one batch fewer would hang the others.
    x, y = _data(n)
    ranks = [
        TensorBatchLoader(
            x,
            y,
            batch_size,
            shuffle=True,
            rank=r,
            world_size=2,
            drop_singleton=drop_singleton,
            pad_shards=True,
        )
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1])
    shards = [torch.cat([by for _, by in _epoch(loader)]) for loader in ranks]
    assert [len(batches) for batches in map(_epoch, ranks)] == [len(ranks[0])] * 2
    if not drop_singleton:
        assert set(torch.cat(shards).tolist()) == set(range(n))  # padding wraps, nothing is lost


def test_set_epoch_picks_the_shuffle_of_that_epoch():
    x, y = _data(30)
    fresh = TensorBatchLoader(x, y, 8, shuffle=True, seed=3)
    orders = [torch.cat([by for _, by in _epoch(fresh)]) for _ in range(3)]
    resumed = TensorBatchLoader(x, y, 8, shuffle=True, seed=3)
    resumed.sampler.set_epoch(2)  # what Lightning does before epoch 2 of a resumed run
    assert torch.equal(torch.cat([by for _, by in _epoch(resumed)]), orders[2])


# --- the Lightning hooks without a trainer ------------------------------------------------------


def test_setup_without_trainer_serves_cpu_batches():
    dm = DigitsDataModule(layout="flat", batch_size=100)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, TensorBatchLoader)
    n_train = len(dm.splits["train"].x)
    assert len(loader) == math.ceil(n_train / 100)
    seen = 0
    for bx, by in loader:
        assert isinstance(bx, torch.Tensor) and isinstance(by, torch.Tensor)
        assert bx.device.type == "cpu" and by.device.type == "cpu"
        assert bx.shape[1:] == (64,) and bx.dtype == torch.float32 and by.dtype == torch.long
        seen += len(bx)
    assert seen == n_train
    assert loader.shuffle
    val = dm.val_dataloader()
    assert not val.shuffle
    assert torch.equal(torch.cat([by for _, by in val]), dm.splits["val"].y)
    assert sum(len(by) for _, by in dm.test_dataloader()) == len(dm.splits["test"].y)


def test_dataloaders_set_themselves_up_when_setup_was_not_called():
    dm = MoonsDataModule(n_samples=100, batch_size=16)
    bx, by = next(iter(dm.train_dataloader()))
    assert bx.shape == (16, 2) and by.shape == (16,)
    assert bx.device.type == "cpu"


# --- sequence, token and denoise layouts ----------------------------------------------------------

DIGITS = load_digits()


# --- sequence, token and denoise layouts: digits layouts ------------------------------------------

LAYOUT_CASES = [
    ("image", (1, 8, 8), torch.float32, None),
    ("flat", (64,), torch.float32, None),
    ("sequence", (8, 8), torch.float32, None),
    ("tokens", (64,), torch.int64, 17),
]


@pytest.mark.parametrize(("layout", "shape", "dtype", "vocab"), LAYOUT_CASES)
def test_digits_layouts_give_shape_dtype_and_vocabulary(layout, shape, dtype, vocab):
    dm = DigitsDataModule(layout=layout)
    assert dm.input_shape == shape
    assert dm.input_dtype == dtype
    assert dm.vocab_size == vocab
    assert dm.task == "classification" and dm.num_classes == 10 == dm.num_outputs
    assert dm.target_shape == ()
    assert dm.noisy_input_mse is None
    for split in dm.splits.values():
        assert split.x.shape[1:] == shape and split.x.dtype == dtype
        assert split.y.dtype == torch.long


def test_sequence_steps_are_the_rows_of_the_image():
    for standardize in (False, True):
        image = DigitsDataModule(layout="image", standardize=standardize).splits
        sequence = DigitsDataModule(layout="sequence", standardize=standardize).splits
        for name in ("train", "val", "test"):
            x_img, x_seq = image[name].x, sequence[name].x
            assert torch.equal(sequence[name].y, image[name].y)
            for row in range(8):  # step r of sample i is row r of image i
                assert torch.equal(x_seq[:, row], x_img[:, 0, row])


def test_tokens_are_the_raw_intensities_never_standardized():
    tokens = DigitsDataModule(layout="tokens").splits  # standardize: true is the default
    raw = DigitsDataModule(layout="flat", standardize=False).splits
    seen = set()
    for name in ("train", "val", "test"):
        x = tokens[name].x
        assert x.dtype == torch.int64
        assert torch.equal(x.double(), raw[name].x.double())
        assert int(x.min()) >= 0 and int(x.max()) < 17
        seen |= set(x.unique().tolist())
    assert seen == set(range(17))
    # The same pixels as load_digits holds, every image in exactly one split.
    rows = np.concatenate([tokens[name].x.numpy() for name in ("train", "val", "test")])
    np.testing.assert_array_equal(_sorted_rows(rows), _sorted_rows(DIGITS.data.astype(np.int64)))


def test_label_noise_and_train_fraction_keep_tokens_integer():
    clean = DigitsDataModule(layout="tokens").splits["train"]
    dm = DigitsDataModule(layout="tokens", train_fraction=0.5, label_noise=0.4)
    train = dm.splits["train"]
    assert train.x.dtype == torch.int64 and len(train.x) == round(0.5 * len(clean.x))
    # Every kept sample is an unchanged training sample; some labels were redrawn.
    index = {
        row.tobytes(): label for row, label in zip(clean.x.numpy(), clean.y.numpy(), strict=True)
    }
    kept = [row.tobytes() in index for row in train.x.numpy()]
    assert all(kept)
    changed = sum(
        index[row.tobytes()] != label
        for row, label in zip(train.x.numpy(), train.y.numpy(), strict=True)
    )
    assert changed > 0.2 * len(train.x)
    for name in ("val", "test"):
        assert dm.splits[name].x.dtype == torch.int64


def test_loaders_carry_int64_tokens_in_every_batch():
    dm = DigitsDataModule(layout="tokens", batch_size=100, shuffle=True)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for bx, by in loader:
            assert bx.dtype == torch.int64 and by.dtype == torch.long
    x = dm.splits["train"].x
    sharded = TensorBatchLoader(x, torch.arange(len(x)), 16, shuffle=True, rank=1, world_size=2)
    assert all(bx.dtype == torch.int64 for bx, _ in sharded)


class _TokenNet(L.LightningModule):
    """Embedding -> mean -> Linear; records the dtype of every batch that reached the step."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.head = torch.nn.Embedding(17, 4), torch.nn.Linear(4, 10)
        self.dtypes: set[torch.dtype] = set()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.dtypes.add(x.dtype)
        return F.cross_entropy(self.head(self.embedding(x).mean(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_lightning_moves_token_batches_to_the_device_as_integers(precision):
    dm = DigitsDataModule(layout="tokens", batch_size=64)
    net = _TokenNet()
    quiet_trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, precision=precision).fit(
        net, datamodule=dm
    )
    assert net.dtypes == {torch.int64}


def test_float_data_declares_no_vocabulary():
    for dm in (MoonsDataModule(n_samples=100), RegressionDataModule(n_samples=100)):
        assert dm.vocab_size is None and dm.input_dtype == torch.float32
    assert MoonsDataModule(n_samples=100).target_shape == ()
    assert RegressionDataModule(n_samples=100).target_shape == (1,)


# --- sequence, token and denoise layouts: denoising -----------------------------------------------


def _pixel_moments(images: torch.Tensor) -> tuple[float, float]:
    a = images.double()
    return a.mean().item(), a.std(unbiased=False).item()


def test_denoise_targets_are_the_clean_images_inputs_carry_the_noise():
    raw = DigitsDataModule(target="denoise", noise_std=3.0, standardize=False)
    std = DigitsDataModule(target="denoise", noise_std=3.0)
    assert std.task == "regression" and std.target_shape == (1, 8, 8) and std.num_outputs == 64
    assert std.input_shape == (1, 8, 8) and std.input_dtype == torch.float32
    # The raw targets are the digits images, each in exactly one split.
    clean = np.concatenate([raw.splits[k].y.numpy() for k in ("train", "val", "test")])
    np.testing.assert_array_equal(_sorted_rows(clean), _sorted_rows(DIGITS.data))
    # The noise has the requested std in raw units (0-16), mean 0, and is independent per pixel.
    noise = torch.cat([(raw.splits[k].x - raw.splits[k].y).flatten() for k in raw.splits]).double()
    assert noise.std().item() == pytest.approx(3.0, rel=0.02)
    assert abs(noise.mean().item()) < 0.05
    # Inputs and targets are standardized with one mean/std: those of the clean training images.
    mean, scale = _pixel_moments(raw.splits["train"].y)
    for name in ("train", "val", "test"):
        expected_y = (raw.splits[name].y.double() - mean) / scale
        expected_x = (raw.splits[name].x.double() - mean) / scale
        torch.testing.assert_close(std.splits[name].y.double(), expected_y, atol=1e-5, rtol=0)
        torch.testing.assert_close(std.splits[name].x.double(), expected_x, atol=1e-5, rtol=0)
    y_train = std.splits["train"].y.double()
    assert abs(y_train.mean().item()) < 1e-6
    assert y_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_noisy_input_mse_is_the_mse_of_returning_the_input():
    raw = DigitsDataModule(target="denoise", standardize=False)
    dm = DigitsDataModule(target="denoise")
    baseline = dm.noisy_input_mse
    assert set(baseline) == {"val", "test"}
    _, scale = _pixel_moments(raw.splits["train"].y)
    for name in ("val", "test"):
        x, y = dm.splits[name].x.numpy().astype(np.float64), dm.splits[name].y.numpy()
        assert baseline[name] == pytest.approx(np.mean((x - y) ** 2), rel=1e-6)
        noise = (raw.splits[name].x - raw.splits[name].y).double()
        assert baseline[name] == pytest.approx(((noise / scale) ** 2).mean().item(), rel=1e-4)
        # About (noise_std / pixel std)^2: the default 4.0 against a spread of about 6.
        assert baseline[name] == pytest.approx((4.0 / scale) ** 2, rel=0.05)
    assert raw.noisy_input_mse["test"] == pytest.approx(16.0, rel=0.05)  # raw units: 4.0^2


def test_denoise_layouts_share_the_samples_and_the_noise():
    image = DigitsDataModule(target="denoise").splits
    for layout, shape in (("flat", (64,)), ("sequence", (8, 8))):
        other = DigitsDataModule(target="denoise", layout=layout).splits
        for name in ("train", "test"):
            assert other[name].x.shape[1:] == shape == other[name].y.shape[1:]
            n = len(image[name].x)
            assert torch.equal(other[name].x.reshape(n, -1), image[name].x.reshape(n, -1))
            assert torch.equal(other[name].y.reshape(n, -1), image[name].y.reshape(n, -1))


def test_denoise_noise_is_seeded_by_data_seed():
    a = DigitsDataModule(target="denoise").splits
    b = DigitsDataModule(target="denoise", shuffle_seed=7).splits
    c = DigitsDataModule(target="denoise", data_seed=1).splits
    for name in ("train", "test"):
        assert torch.equal(a[name].x, b[name].x) and torch.equal(a[name].y, b[name].y)
        assert torch.equal(a[name].y, c[name].y)  # the split depends on split_seed only
        assert not torch.equal(a[name].x, c[name].x)


def test_denoise_batches_are_image_pairs():
    dm = DigitsDataModule(target="denoise", batch_size=32)
    bx, by = next(iter(dm.train_dataloader()))
    assert bx.shape == by.shape == (32, 1, 8, 8)
    assert bx.dtype == by.dtype == torch.float32


# --- sequence, token and denoise layouts: the adding problem --------------------------------------


def test_adding_problem_has_two_markers_and_their_sum_as_target():
    dm = AddingDataModule(length=20, n_samples=500, standardize=False, standardize_target=False)
    assert dm.input_shape == (20, 2) and dm.target_shape == (1,) and dm.num_outputs == 1
    assert dm.task == "regression" and dm.vocab_size is None and dm.input_dtype == torch.float32
    for split in dm.splits.values():
        values, markers = split.x[..., 0], split.x[..., 1]
        assert ((values >= 0) & (values < 1)).all()
        assert set(markers.unique().tolist()) == {0.0, 1.0}
        assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
        expected = (values.double() * markers.double()).sum(1, keepdim=True)
        torch.testing.assert_close(split.y.double(), expected, atol=1e-6, rtol=0)


def test_adding_problem_odd_length_and_shortest_sequence():
    for length in (2, 7):
        x = AddingDataModule(length=length, n_samples=200, standardize=False).splits["train"].x
        half = length // 2
        assert (x[:, :half, 1].sum(1) == 1).all() and (x[:, half:, 1].sum(1) == 1).all()


def test_adding_problem_trivial_baseline_and_standardization():
    raw = AddingDataModule(n_samples=4000, standardize_target=False).splits["train"].y.double()
    # Predicting the mean: MSE = Var(U + U') = 1/6 before standardization ...
    assert raw.var(unbiased=False).item() == pytest.approx(1 / 6, rel=0.05)
    assert raw.mean().item() == pytest.approx(1.0, abs=0.02)
    dm = AddingDataModule(n_samples=4000, standardize=True)
    # ... and 1 after it.
    y = dm.splits["train"].y.double()
    assert y.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # Inputs: one mean/std per feature over samples and steps, not per step.
    x = dm.splits["train"].x.double()
    torch.testing.assert_close(
        x.mean((0, 1)), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        x.std((0, 1), unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert x[:, :, 1].unique().numel() == 2  # the markers stay two levels


def test_adding_problem_is_seeded_by_data_seed():
    a = AddingDataModule(n_samples=300).load_arrays()
    b = AddingDataModule(n_samples=300).load_arrays()
    c = AddingDataModule(n_samples=300, data_seed=3).load_arrays()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# --- sequence, token and denoise layouts: IDX files in every layout -------------------------------

SIDE_ROWS, SIDE_COLS, N_TRAIN, N_TEST = 5, 6, 40, 12


def _write_idx(path: Path, array: np.ndarray, code: int = 0x08, dtype: str = "u1") -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=dtype).tobytes())


def _idx_folder(folder: Path, float_images: bool = False) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (N_TRAIN, SIDE_ROWS, SIDE_COLS)).astype(np.uint8)
    train[0, 0, :2] = (0, 255)  # both ends of the byte range
    test = rng.integers(0, 256, (N_TEST, SIDE_ROWS, SIDE_COLS)).astype(np.uint8)
    for prefix, images in (("train", train), ("t10k", test)):
        if float_images:
            _write_idx(folder / f"{prefix}-images-idx3-ubyte", images / 255.0, 0x0E, ">f8")
        else:
            _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(len(images)) % 4)
    return folder, test


@pytest.mark.parametrize(
    ("layout", "shape", "dtype"),
    [
        ("image", (1, SIDE_ROWS, SIDE_COLS), torch.float32),
        ("flat", (SIDE_ROWS * SIDE_COLS,), torch.float32),
        ("sequence", (SIDE_ROWS, SIDE_COLS), torch.float32),
        ("tokens", (SIDE_ROWS * SIDE_COLS,), torch.int64),
    ],
)
def test_idx_layouts(tmp_path, layout, shape, dtype):
    dm = IdxDataModule(path=_idx_folder(tmp_path)[0], layout=layout)
    assert dm.input_shape == shape and dm.input_dtype == dtype
    assert dm.vocab_size == (256 if layout == "tokens" else None)
    assert dm.num_classes == 4 and dm.target_shape == ()
    for split in dm.splits.values():
        assert split.x.dtype == dtype


def test_idx_sequence_is_the_image_rows_and_tokens_the_bytes(tmp_path):
    folder, test_bytes = _idx_folder(tmp_path)
    image = IdxDataModule(path=folder).splits["test"].x  # the t10k files, in file order
    sequence = IdxDataModule(path=folder, layout="sequence").splits["test"].x
    assert torch.equal(sequence, image[:, 0])
    tokens = IdxDataModule(path=folder, layout="tokens").splits["test"].x
    assert torch.equal(tokens, torch.as_tensor(test_bytes.reshape(N_TEST, -1), dtype=torch.int64))
    raw = IdxDataModule(path=folder, standardize=False).splits["test"].x
    torch.testing.assert_close(raw[:, 0].double(), torch.as_tensor(test_bytes / 255.0))


def test_idx_tokens_quantize_bytes_into_levels(tmp_path):
    folder, test_bytes = _idx_folder(tmp_path)
    dm = IdxDataModule(path=folder, layout="tokens", levels=4)
    assert dm.vocab_size == 4
    expected = torch.as_tensor(test_bytes.reshape(N_TEST, -1).astype(np.int64) // 64)
    assert torch.equal(dm.splits["test"].x, expected)
    train = dm.splits["train"].x
    assert int(train.min()) == 0 and int(train.max()) == 3


def test_idx_denoise(tmp_path):
    folder, test_bytes = _idx_folder(tmp_path)
    dm = IdxDataModule(path=folder, target="denoise", noise_std=0.1, standardize=False)
    assert dm.task == "regression" and dm.target_shape == (1, SIDE_ROWS, SIDE_COLS)
    test = dm.splits["test"]
    clean = torch.as_tensor(test_bytes / 255.0)[:, None]
    torch.testing.assert_close(test.y.double(), clean)
    noise = torch.cat([(s.x - s.y).flatten() for s in dm.splits.values()]).double()
    assert noise.std().item() == pytest.approx(0.1, rel=0.1)
    assert dm.noisy_input_mse["test"] == pytest.approx(((test.x - test.y) ** 2).mean().item())


def test_idx_tokens_need_byte_pixels(tmp_path):
    folder, _ = _idx_folder(tmp_path, float_images=True)
    assert IdxDataModule(path=folder).input_shape == (1, SIDE_ROWS, SIDE_COLS)  # floats: fine
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=folder, layout="tokens").input_shape  # noqa: B018
    assert info.value.key == "layout" and "0..255" in info.value.message


# --- sequence, token and denoise layouts: the configs ---------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "cls", "shape"),
    [
        (["data.layout=sequence"], DigitsDataModule, (8, 8)),
        (["data.layout=tokens"], DigitsDataModule, (64,)),
        (["data.target=denoise"], DigitsDataModule, (1, 8, 8)),
        (["data=adding", "data.length=12", "data.n_samples=300"], AddingDataModule, (12, 2)),
    ],
)
def test_configs_instantiate(tmp_path, overrides, cls, shape):
    cfg = compose_config(overrides, tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm) is cls and dm.input_shape == shape


def test_config_files_hold_the_class_defaults(tmp_path):
    for option, cls, keys in (
        ("digits", DigitsDataModule, ("layout", "target", "noise_std")),
        ("adding", AddingDataModule, ("length", "n_samples")),
    ):
        cfg = compose_config([f"data={option}"], tmp_path)
        defaults = inspect.signature(cls.__init__).parameters
        for key in keys:
            assert cfg.data[key] == defaults[key].default, (option, key)


# --- sequence, token and denoise layouts: bad values ----------------------------------------------

BAD_CASES = [
    (DigitsDataModule, {"layout": "rows"}, "layout", "sequence, tokens"),
    (DigitsDataModule, {"target": "segment"}, "target", "label, denoise"),
    (DigitsDataModule, {"noise_std": 0.0}, "noise_std", "(0, inf]"),
    (DigitsDataModule, {"noise_std": -1.0}, "noise_std", "got -1.0"),
    (DigitsDataModule, {"noise_std": float("nan")}, "noise_std", "got nan"),
    (DigitsDataModule, {"noise_std": "high"}, "noise_std", "number"),
    (DigitsDataModule, {"layout": "tokens", "target": "denoise"}, "target", "not layout tokens"),
    (DigitsDataModule, {"target": "denoise", "label_noise": 0.1}, "label_noise", "classification"),
    (AddingDataModule, {"length": 1}, "length", ">= 2"),  # no room for a marker in each half
    (AddingDataModule, {"length": 2.5}, "length", "integer"),
    (AddingDataModule, {"length": "long"}, "length", "integer"),
    (AddingDataModule, {"n_samples": 0}, "n_samples", "[1, "),
    (AddingDataModule, {"n_samples": 10**8, "length": 10**3}, "n_samples", "fit in memory"),
    (AddingDataModule, {"label_noise": 0.1}, "label_noise", "classification"),
]


@pytest.mark.parametrize(("cls", "kwargs", "key", "fragment"), BAD_CASES)
def test_bad_values_are_one_line_errors_naming_the_key(cls, kwargs, key, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert info.value.key == key
    assert fragment in info.value.message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["data.layout=tokens", "data.target=denoise"], "data.target", "not layout tokens"),
        (["data.layout=columns"], "data.layout", "valid: image, flat, sequence, tokens"),
        (["data.target=denoise", "data.noise_std=-2"], "data.noise_std", "got -2"),
        (["data=adding", "data.length=1"], "data.length", ">= 2"),
    ],
)
def test_a_run_with_bad_sequence_data_stops_before_training(tmp_path, overrides, key, fragment):
    out = tmp_path / "run"
    small = ["model=mlp", "model.width=8", "trainer.max_epochs=1", "logger=none"]
    with pytest.raises(ConfigError) as info:
        run_one(compose_config([*small, *overrides], out))
    assert info.value.key == key and fragment in info.value.message
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"layout": "pixels"}, "layout", "image, flat, sequence, tokens"),
        ({"levels": 1}, "levels", "[2, 256]"),
        ({"levels": 257}, "levels", "[2, 256]"),
        ({"layout": "tokens", "target": "denoise"}, "target", "not layout tokens"),
        ({"noise_std": 0}, "noise_std", "number"),
    ],
)
def test_bad_idx_values_are_refused_at_construction(tmp_path, kwargs, key, fragment):
    folder, _ = _idx_folder(tmp_path)
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=folder, **kwargs)
    assert info.value.key == key and fragment in info.value.message
    assert "\n" not in str(info.value)


def test_out_of_range_tokens_are_refused_before_training():
    class Tokens(DigitsDataModule):
        def tokens(self, images):
            return images.astype(np.int64) + 1  # 17 is outside the vocabulary of 17

    with pytest.raises(ConfigError) as info:
        Tokens(layout="tokens").input_shape  # noqa: B018
    assert info.value.key == "" and "[0, 17)" in info.value.message
