"""data=svhn reads the official MATLAB files (fabricated here with scipy.io.savemat).

X [32, 32, 3, N] becomes (N, 3, 32, 32), label 10 becomes 0, `extra` adds the extra file to the
training split, the test file is the test split, and each bad file is one error on `root`.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from conftest import compose_config
from real_data_support import svhn_mat, write_svhn
from reglab.data import SvhnDataModule
from reglab.errors import ConfigError
from reglab.run import run_one

SMALL = {"val_fraction": 0.25}


@pytest.fixture
def svhn(tmp_path):
    return write_svhn(tmp_path / "svhn")


def test_svhn_images_are_transposed_and_label_10_is_0(svhn):
    module = SvhnDataModule(root=str(svhn), **SMALL)
    mat = scipy.io.loadmat(svhn / "test_32x32.mat")
    test = module.splits["test"]
    assert test.x.dtype == torch.uint8 and test.x.shape == (10, 3, 32, 32)
    assert test.x[4, 2, 7, 1] == mat["X"][7, 1, 2, 4]  # [row, column, channel, sample]
    assert mat["y"][0, 0] == 10 and test.y[0] == 0
    assert test.y.tolist() == [i % 10 for i in range(10)]
    assert module.num_classes == 10 and module.input_shape == (3, 32, 32)
    assert (len(module.splits["train"].x), len(module.splits["val"].x)) == (30, 10)


def test_extra_joins_the_training_split_only(tmp_path):
    root = write_svhn(tmp_path / "svhn", extra=20)
    plain = SvhnDataModule(root=str(root), **SMALL).splits
    extra = SvhnDataModule(root=str(root), extra=True, **SMALL).splits
    assert len(extra["train"].x) + len(extra["val"].x) == 60
    assert torch.equal(plain["test"].x, extra["test"].x)


def test_extra_requires_its_file(svhn):
    with pytest.raises(ConfigError) as error:
        SvhnDataModule(root=str(svhn), extra=True)
    assert error.value.key == "root" and "extra_32x32.mat" in error.value.message
    assert "data.download=true" in error.value.message


def test_an_svhn_run_trains_in_process(svhn, tmp_path):
    overrides = ["data=svhn", f"data.root={svhn}", "data.val_fraction=0.25"]
    small = ["model=mlp", "model.width=8", "trainer.max_epochs=1", "logger=none"]
    run_one(compose_config([*overrides, *small], tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.json").exists()


def _labels(values) -> np.ndarray:
    return np.array(values, dtype=np.uint8)


BAD = [
    ("label 0", lambda p: svhn_mat(p, 40, 1, _labels([0] + [1] * 39)), "1 labels outside 1..10"),
    ("label 11", lambda p: svhn_mat(p, 40, 1, _labels([11] * 40)), "40 labels outside 1..10"),
    ("float labels", lambda p: svhn_mat(p, 40, 1, np.ones(40)), "labels must be integers"),
    ("count mismatch", lambda p: svhn_mat(p, 40, 1, _labels([1] * 39)), "40 images but 39"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:3000]), "truncated or not a MATLAB"),
    ("not a mat file", lambda p: p.write_bytes(b"hello"), "truncated or not a MATLAB"),
    ("no y", lambda p: scipy.io.savemat(p, {"X": np.zeros((32, 32, 3, 2), np.uint8)}), "X and y"),
    (
        "gray images",
        lambda p: scipy.io.savemat(p, {"X": np.zeros((32, 32, 2), np.uint8), "y": [[1], [2]]}),
        "X must be [rows, columns, 3, count]",
    ),
    (
        "float images",
        lambda p: scipy.io.savemat(p, {"X": np.zeros((32, 32, 3, 2)), "y": [[1], [2]]}),
        "images must be uint8",
    ),
]


@pytest.mark.parametrize(("damage", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_mat_file_is_refused_naming_it(svhn, damage, fragment):
    damage(svhn / "train_32x32.mat")
    with pytest.raises(ConfigError) as error:
        SvhnDataModule(root=str(svhn), **SMALL).splits  # noqa: B018
    assert error.value.key == "root"
    assert error.value.message.startswith("train_32x32.mat") and fragment in error.value.message
