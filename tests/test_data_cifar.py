"""data=cifar10 and data=cifar100 read the official python pickle batches (fabricated here).

Shapes and labels as the files hold them, the official test batch as the test split, a seeded
validation split from the training batches, uint8 storage standardized per batch, CIFAR-100's
fine and coarse labels, a training run, and one error line for each kind of bad folder.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import compose_config, run_train_py
from real_data_support import cifar_batch, cycling, images, write_cifar10, write_cifar100
from reglab.data import Cifar10DataModule, Cifar100DataModule
from reglab.errors import ConfigError
from reglab.run import run_one

SMALL = {"val_fraction": 0.25, "batch_size": 16}  # 40 training images: 10 val, 30 train


@pytest.fixture
def cifar10(tmp_path):
    return write_cifar10(tmp_path / "data")


def test_cifar10_images_and_labels_are_read_as_the_files_hold_them(cifar10):
    module = Cifar10DataModule(root=str(cifar10), **SMALL)
    test = pickle.loads((cifar10 / "cifar-10-batches-py" / "test_batch").read_bytes())
    split = module.splits["test"]  # the official test batch, in its order
    assert split.x.dtype == torch.uint8 and split.x.shape == (10, 3, 32, 32)
    data = test[b"data"]  # a row: the red, green and blue planes, each 32 rows of 32 pixels
    assert split.x[3, 1, 2, 5] == data[3, 1024 + 2 * 32 + 5]
    assert np.array_equal(split.x.numpy().reshape(10, -1), data)
    assert split.y.tolist() == test[b"labels"]
    assert module.num_classes == 10 and module.input_shape == (3, 32, 32)


def test_the_validation_split_comes_from_the_training_batches_seeded(cifar10):
    first = Cifar10DataModule(root=str(cifar10), **SMALL).splits
    again = Cifar10DataModule(root=str(cifar10), **SMALL).splits
    other = Cifar10DataModule(root=str(cifar10), split_seed=1, **SMALL).splits
    assert (len(first["train"].x), len(first["val"].x), len(first["test"].x)) == (30, 10, 10)
    assert torch.equal(first["val"].x, again["val"].x)
    assert not torch.equal(first["val"].x, other["val"].x)
    assert sorted(first["val"].y.tolist()) == list(range(10))  # stratified: one of each class
    training = np.concatenate(
        [images(8, i).reshape(8, -1) for i in range(1, 6)]
    )  # the five batches' images
    seen = {row.tobytes() for row in training}
    for name in ("train", "val"):
        assert all(row.tobytes() in seen for row in first[name].x.numpy().reshape(-1, 3072))
    assert torch.equal(first["test"].x, other["test"].x)  # the test split is the test batch


def test_bytes_stay_bytes_and_each_batch_is_standardized_per_channel(cifar10):
    module = Cifar10DataModule(root=str(cifar10), **SMALL)
    module.setup()
    train = torch.cat([x for x, _ in module.train_dataloader()])
    assert module.splits["train"].x.dtype == torch.uint8
    assert train.dtype == torch.float32
    means, stds = train.mean(dim=(0, 2, 3)), train.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(means, torch.zeros(3), atol=1e-5)
    assert torch.allclose(stds, torch.ones(3), atol=1e-4)
    raw = Cifar10DataModule(root=str(cifar10), standardize=False, **SMALL)
    raw.setup()
    x, _ = next(iter(raw.test_dataloader()))
    assert torch.allclose(x, raw.splits["test"].x[: len(x)].float() / 255)


@pytest.mark.parametrize(("kind", "classes"), [("fine", 100), ("coarse", 20)])
def test_cifar100_reads_fine_or_coarse_labels(tmp_path, kind, classes):
    root = write_cifar100(tmp_path / "data")
    module = Cifar100DataModule(root=str(root), label_kind=kind, val_fraction=0.25)
    expected = cycling(100, 100) if kind == "fine" else [f // 5 for f in cycling(100, 100)]
    assert module.splits["test"].y.tolist() == expected
    assert module.num_classes == classes
    assert len(module.splits["train"].x) + len(module.splits["val"].x) == 400


def test_cifar100_label_kind_is_checked(tmp_path):
    with pytest.raises(ConfigError) as error:
        Cifar100DataModule(root=str(tmp_path), label_kind="medium")
    assert error.value.key == "label_kind" and "fine, coarse" in error.value.message


def test_a_cifar_run_trains_and_tests_in_process(cifar10, tmp_path):
    overrides = ["data=cifar10", f"data.root={cifar10}", "data.val_fraction=0.25"]
    small = ["model=cnn", "model.channels=4", "trainer.max_epochs=1", "logger=none"]
    cfg = compose_config([*overrides, *small], tmp_path / "run")
    run_one(cfg)
    assert (tmp_path / "run" / "metrics.json").exists()


# --- bad folders: one error naming the key -----------------------------------------------------

BATCH = "cifar-10-batches-py/data_batch_2"


def _damage(root, name: str, raw: bytes) -> None:
    (root / name).write_bytes(raw)


def _good() -> bytes:
    return cifar_batch(images(8, 2), {b"labels": cycling(8, 10)})


BAD = [
    ("truncated pickle", lambda: _good()[:-40], "truncated or not a CIFAR pickle"),
    ("not a pickle", lambda: b"PNG\x00 not a pickle", "truncated or not a CIFAR pickle"),
    ("code in the pickle", lambda: pickle.dumps(print), "asks for builtins.print"),
    ("no labels key", lambda: pickle.dumps({b"data": images(8, 2).reshape(8, -1)}), "b'labels'"),
    ("a list, not a dict", lambda: pickle.dumps([1, 2]), "not a CIFAR batch"),
    (
        "wrong image size",
        lambda: cifar_batch(images(8, 2, (3, 16, 16)), {b"labels": cycling(8, 10)}),
        "uint8 (count, 3072)",
    ),
    (
        "label out of range",
        lambda: cifar_batch(images(8, 2), {b"labels": [10] + cycling(7, 10)}),
        "1 labels outside 0..9",
    ),
    (
        "labels and images differ",
        lambda: cifar_batch(images(8, 2), {b"labels": cycling(7, 10)}),
        "8 images but 7 labels",
    ),
]


@pytest.mark.parametrize(("make", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_batch_is_refused_naming_it(cifar10, make, fragment):
    _damage(cifar10, BATCH, make())
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(cifar10), **SMALL).splits  # noqa: B018
    assert error.value.key == "root"
    assert error.value.message.startswith(BATCH) and fragment in error.value.message


def test_missing_files_name_the_expected_files_and_the_download_option(cifar10):
    (cifar10 / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=str(cifar10))
    message = error.value.message
    assert error.value.key == "root"
    assert "cifar-10-batches-py/data_batch_1" in message and "test_batch" in message
    assert "data.download=true" in message and "\n" not in message


@pytest.mark.parametrize("root", [None, "", True])
def test_root_is_required(root):
    with pytest.raises(ConfigError) as error:
        Cifar10DataModule(root=root)
    assert error.value.key == "root"


@pytest.mark.slow  # a subprocess (tens of seconds on a busy machine); CI runs the slow tests
def test_train_py_trains_on_cifar10_and_prints_one_line_for_a_missing_folder(cifar10, tmp_path):
    small = ["model=cnn", "model.channels=4", "trainer.max_epochs=1", "logger=none"]
    args = ["data=cifar10", f"data.root={cifar10}", "data.val_fraction=0.25", *small]
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "on cifar10 (30 train / 10 val / 10 test)" in result.stdout + result.stderr
    result = run_train_py(["data=cifar10", f"data.root={tmp_path / 'none'}"], cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("reglab: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith("reglab: error: data.root: CIFAR-10 expects")
    assert "data.download=true" in errors[0]
