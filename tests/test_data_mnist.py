"""data=mnist, fashion_mnist and kmnist: the IDX reader over the official file names under root.

The four files are read gzipped or not, the t10k pair is the test split, labels must be the
family's 10 classes, and errors name `data.root` (the key the user typed), not the reader's path.
The README's `data=idx data.path=...` keeps working beside them.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from conftest import compose_config
from real_data_support import mnist_files
from reglab.data import IdxDataModule, MnistFamilyDataModule
from reglab.data.mnist import OFFICIAL
from reglab.errors import ConfigError
from reglab.run import run_one
from test_bad_data import idx_bytes

SMALL = {"val_fraction": 0.25}


def write(folder, files, gz: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


@pytest.mark.parametrize("gz", [False, True], ids=["unpacked", "gzipped"])
@pytest.mark.parametrize("official", sorted(OFFICIAL))
def test_each_family_member_reads_the_official_files(tmp_path, official, gz):
    root = write(tmp_path / official, mnist_files(), gz=gz)
    module = MnistFamilyDataModule(official=official, root=str(root), **SMALL)
    splits = module.splits
    assert splits["test"].y.tolist() == [i % 10 for i in range(10)]  # the t10k pair
    assert (len(splits["train"].x), len(splits["val"].x)) == (30, 10)
    assert module.input_shape == (1, 28, 28) and module.num_classes == 10


def test_a_preset_is_the_idx_reader(tmp_path):
    root = write(tmp_path / "mnist", mnist_files())
    preset = MnistFamilyDataModule(root=str(root), **SMALL).splits
    idx = IdxDataModule(path=str(root), **SMALL).splits
    for name in ("train", "val", "test"):
        assert torch.equal(preset[name].x, idx[name].x)


@pytest.mark.parametrize("option", ["mnist", "fashion_mnist", "kmnist"])
def test_the_presets_name_their_file_set(make_cfg, option):
    assert make_cfg(f"data={option}").data.official == option


def test_a_preset_run_trains_in_process(tmp_path):
    root = write(tmp_path / "fashion", mnist_files(side=8))
    overrides = [
        "data=fashion_mnist",
        f"data.root={root}",
        "data.layout=flat",
        "data.val_fraction=0.25",
    ]
    small = ["model=mlp", "model.width=8", "trainer.max_epochs=1", "logger=none"]
    run_one(compose_config([*overrides, *small], tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.json").exists()


def test_the_readme_idx_example_still_reads_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # README: data=idx data.path=$HOME/mnist
    write(tmp_path / "mnist", mnist_files())
    cfg = compose_config(["data=idx", f"data.path={tmp_path}/mnist"], tmp_path / "run")
    assert cfg.data._target_ == "reglab.data.IdxDataModule"
    assert IdxDataModule(path="~/mnist", **SMALL).splits["test"].x.shape == (10, 1, 28, 28)


def test_missing_files_name_the_official_files_and_the_download_option(tmp_path):
    files = mnist_files()
    del files["t10k-labels-idx1-ubyte"]
    root = write(tmp_path / "kmnist", files)
    with pytest.raises(ConfigError) as error:
        MnistFamilyDataModule(official="kmnist", root=str(root))
    assert error.value.key == "root"
    message = error.value.message
    assert message.startswith("KMNIST expects train-images-idx3-ubyte.gz")
    assert "t10k-labels-idx1-ubyte.gz" in message and "data.download=true" in message


BAD = [
    (
        "truncated images",
        "train-images-idx3-ubyte",
        lambda raw: raw[:-7],
        "train-images-idx3-ubyte: truncated",
    ),
    ("label 10", "t10k-labels-idx1-ubyte", lambda raw: idx_bytes(np.full(10, 10, np.uint8)), "10"),
    ("not IDX", "train-labels-idx1-ubyte", lambda raw: b"\x89PNG....", "not an IDX file"),
]


@pytest.mark.parametrize(
    ("name", "damage", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_file_is_an_error_on_root(tmp_path, name, damage, fragment):
    files = mnist_files()
    files[name] = damage(files[name])
    root = write(tmp_path / "mnist", files)
    with pytest.raises(ConfigError) as error:
        MnistFamilyDataModule(root=str(root), **SMALL).splits  # noqa: B018
    assert error.value.key == "root" and fragment in error.value.message


def test_the_official_name_is_checked(tmp_path):
    with pytest.raises(ConfigError) as error:
        MnistFamilyDataModule(official="emnist", root=str(tmp_path))
    assert error.value.key == "official" and "kmnist" in error.value.message
