"""data=image_folder reads a class-per-folder tree of PNG/JPEG files of any size (fabricated here).

Classes are the folder names sorted; files of mixed sizes are resized (shorter side) and
center-cropped as torchvision's Resize + CenterCrop; train/ and test/ (or val/) trees keep their
test split; a tree larger than the memory budget is streamed by DataLoader workers and gives the
same batches as in memory (the same samples in the same order each epoch, the same values; workers
change neither); every unreadable tree or file is one error on root naming it; runs train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config, run_train_py
from reglab.data import ImageFolderDataModule
from reglab.data.image_folder import FolderImages
from reglab.errors import ConfigError
from reglab.run import run_one

SIZES = [(40, 30), (30, 52), (16, 16), (45, 20), (24, 36), (33, 33)]  # (width, height)
SMALL = {"batch_size": 4, "val_fraction": 0.2, "test_fraction": 0.2, "num_workers": 0}


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A random RGB image."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def write_tree(
    root: Path, classes=("cat", "ant", "bee"), per_class: int = 6, seed: int = 0
) -> Path:
    """root/<class>/ with `per_class` PNG and JPEG files of the mixed SIZES (one nested), plus a
    file that is no image."""
    for c, name in enumerate(classes):
        folder = root / name
        (folder / "more").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            where = folder / "more" if i == 0 else folder
            suffix = (".png", ".jpg", ".JPEG")[i % 3]
            photo(*SIZES[i % len(SIZES)], seed + 100 * c + i).save(where / f"{i:02d}{suffix}")
        (folder / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "photos")


def test_classes_are_the_folders_sorted_and_images_are_resized_and_center_cropped(tree):
    module = ImageFolderDataModule(root=str(tree), image_size=12, **SMALL)
    assert module.classes == ["ant", "bee", "cat"] and module.num_classes == 3
    assert module.input_shape == (3, 12, 12)
    paths, labels = module.files["all"]
    assert len(paths) == 18 and "notes.txt" not in {p.name for p in paths}
    ant = ["01.jpg", "02.JPEG", "03.png", "04.jpg", "05.JPEG", "more/00.png"]  # torchvision's order
    assert [p.relative_to(tree / "ant").as_posix() for p in paths[:6]] == ant
    assert [p.parent.name if p.parent.name != "more" else p.parent.parent.name for p in paths] == [
        ["ant", "bee", "cat"][label] for label in labels
    ]
    splits = module.splits
    assert splits["train"].x.dtype == torch.uint8
    assert sum(len(s.x) for s in splits.values()) == 18
    # 45x20 -> shorter side 12: 27x12 (int(12 * 45 / 20)), then columns 8..19 (round(15 / 2))
    wide = next(p for p in paths if Image.open(p).size == (45, 20))
    expected = Image.open(wide).convert("RGB").resize((27, 12), Image.BILINEAR)
    expected = np.asarray(expected.crop((8, 0, 20, 12))).transpose(2, 0, 1)
    assert np.array_equal(module.decoder(wide), expected)


def test_grayscale_and_images_as_stored(tmp_path):
    root = tmp_path / "same"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            photo(20, 10, i + 10 * len(name)).save(root / name / f"{i}.png")
    module = ImageFolderDataModule(root=str(root), channels=1, **SMALL)
    assert module.input_shape == (1, 10, 20)  # no image_size: as stored (height, width)
    first = module.files["all"][0][0]
    assert np.array_equal(module.decoder(first)[0], np.asarray(Image.open(first).convert("L")))


def test_train_and_test_trees_keep_the_official_test_split(tmp_path):
    root = tmp_path / "split"
    write_tree(root / "train", per_class=6)
    write_tree(root / "test", classes=("cat", "ant"), per_class=3, seed=7)  # bee absent at test
    module = ImageFolderDataModule(root=str(root), image_size=8, **SMALL)
    splits = module.splits
    assert module.classes == ["ant", "bee", "cat"]
    assert len(splits["test"].x) == 6 and sorted(splits["test"].y.tolist()) == [0, 0, 0, 2, 2, 2]
    assert len(splits["train"].x) + len(splits["val"].x) == 18
    (root / "test").rename(root / "val")  # val/ is the held-out tree when there is no test/
    again = ImageFolderDataModule(root=str(root), image_size=8, **SMALL).splits
    assert torch.equal(again["test"].x, splits["test"].x)
    write_tree(root / "val", classes=("dog",), per_class=2)
    with pytest.raises(ConfigError) as error:
        ImageFolderDataModule(root=str(root), image_size=8, **SMALL)
    assert error.value.key == "root" and "lacks: dog" in error.value.message


def test_the_test_and_validation_splits_of_one_pool_are_seeded_and_stratified(tree):
    first = ImageFolderDataModule(root=str(tree), image_size=8, **SMALL).splits
    other = ImageFolderDataModule(root=str(tree), image_size=8, split_seed=3, **SMALL).splits
    assert len(first["test"].x) == 4 and set(first["test"].y.tolist()) == {0, 1, 2}  # 0.2 of 18
    assert not torch.equal(first["test"].x, other["test"].x)


def _batches(module: ImageFolderDataModule, epochs: int = 2) -> list:
    module.setup()
    out = []
    for epoch in range(epochs):
        train = module.train_dataloader()
        train.sampler.set_epoch(epoch)  # as Lightning does before each epoch
        out += [("train", epoch, *batch) for batch in train]
    for name in ("val", "test"):
        out += [(name, 0, *batch) for batch in module._loader(name)]
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_gives_the_in_memory_batches(tree, workers):
    common = {**SMALL, "image_size": 12, "shuffle_seed": 5, "num_workers": workers}
    memory = ImageFolderDataModule(root=str(tree), **common)
    streamed = ImageFolderDataModule(root=str(tree), **{**common, "memory_budget_mb": 0})
    assert memory.in_memory and not streamed.in_memory
    assert isinstance(streamed.splits["train"].x, FolderImages)  # files, not tensors
    assert streamed.input_shape == memory.input_shape == (3, 12, 12)
    expected, got = _batches(memory), _batches(streamed)
    assert len(got) == len(expected) == 2 * 3 + 1 + 1  # 10 train (4, 4, 2); 4 val; 4 test
    for (name, epoch, x, y), (name2, epoch2, x2, y2) in zip(expected, got, strict=True):
        assert (name, epoch) == (name2, epoch2)
        assert x.dtype == torch.float32 and torch.equal(x, x2) and torch.equal(y, y2)
    first, second = (
        torch.cat([x for n, e, x, _ in expected if n == "train" and e == k]) for k in (0, 1)
    )
    assert not torch.equal(first, second)  # reshuffled per epoch


def test_a_file_broken_during_a_streamed_run_is_one_error_on_data_root(tree):
    module = ImageFolderDataModule(root=str(tree), image_size=8, memory_budget_mb=0, **SMALL)
    module.setup()
    victim = module.splits["val"].x.paths[0]
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.raises(ConfigError) as error:
        list(module.val_dataloader())
    assert error.value.key == "data.root" and str(victim) in error.value.message


def _truncate(tree: Path) -> Path:
    victim = tree / "bee" / "01.jpg"
    victim.write_bytes(victim.read_bytes()[:200])
    return victim


def _corrupt(tree: Path) -> Path:
    victim = tree / "cat" / "03.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    return victim


BAD_FILES = [
    ("truncated JPEG", _truncate, "truncated or not a PNG/JPEG image"),
    ("corrupt PNG", _corrupt, "truncated or not a PNG/JPEG image"),
]


@pytest.mark.parametrize("budget", [2048, 0], ids=["in memory", "streamed"])
@pytest.mark.parametrize(
    ("damage", "fragment"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES]
)
def test_an_unreadable_image_is_one_error_naming_it(tree, damage, fragment, budget):
    victim = damage(tree)
    module = ImageFolderDataModule(root=str(tree), image_size=8, memory_budget_mb=budget, **SMALL)
    with pytest.raises(ConfigError) as error:
        module.splits  # noqa: B018 (read before training)
    assert error.value.key == "root"
    assert error.value.message.startswith(str(victim)) and fragment in error.value.message
    assert "\n" not in error.value.message


def test_images_of_another_size_need_image_size(tmp_path):
    root = tmp_path / "sizes"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            photo(10, 10, i).save(root / name / f"{i}.png")
    photo(12, 10, 0).save(root / "b" / "3.png")
    with pytest.raises(ConfigError) as error:
        ImageFolderDataModule(root=str(root), **SMALL).splits  # noqa: B018
    assert error.value.key == "root" and str(root / "b" / "3.png") in error.value.message
    assert "12x10" in error.value.message and "data.image_size" in error.value.message
    assert ImageFolderDataModule(root=str(root), image_size=6, **SMALL).input_shape == (3, 6, 6)


def _no_images_in_a_class(root: Path) -> str:
    write_tree(root)
    for path in (root / "bee").rglob("*.*"):
        path.unlink()
    return str(root / "bee")


def _no_class_folders(root: Path) -> str:
    root.mkdir()
    photo(8, 8, 0).save(root / "loose.png")
    return str(root)


BAD_TREES = [
    ("missing root", lambda root: str(root), "is not a folder of class folders"),
    ("no class folders", _no_class_folders, "holds no class folders"),
    ("a class without images", _no_images_in_a_class, "holds no .png/.jpg/.jpeg images"),
]


@pytest.mark.parametrize(
    ("make", "fragment"), [b[1:] for b in BAD_TREES], ids=[b[0] for b in BAD_TREES]
)
def test_a_bad_tree_is_one_error_on_root(tmp_path, make, fragment):
    named = make(tmp_path / "photos")
    with pytest.raises(ConfigError) as error:
        ImageFolderDataModule(root=str(tmp_path / "photos"), **SMALL)
    assert error.value.key == "root" and named in error.value.message
    assert fragment in error.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("channels", 2),
        ("image_size", 0),
        ("memory_budget_mb", -1),
        ("num_workers", -1),
        ("pin_memory", "yes"),
    ],
)
def test_knobs_are_checked(tree, key, value):
    with pytest.raises(ConfigError) as error:
        ImageFolderDataModule(root=str(tree), **{**SMALL, key: value})
    assert error.value.key == key


def test_a_streamed_image_folder_run_trains_in_process(tree, tmp_path):
    data = [
        "data=image_folder",
        f"data.root={tree}",
        "data.image_size=8",
        "data.memory_budget_mb=0",
        "data.num_workers=1",
        "data.batch_size=4",
        "data.val_fraction=0.2",
    ]
    small = ["model=cnn", "model.channels=4", "trainer.max_epochs=2", "logger=none"]
    small += ["augmentation=cifar"]  # black padding: through the byte moments, as on CIFAR
    run_one(compose_config([*data, *small], tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow  # a subprocess (tens of seconds on a busy machine); CI runs the slow tests
def test_train_py_trains_on_an_image_folder_and_prints_one_line_for_a_bad_one(tree, tmp_path):
    small = ["model=cnn", "model.channels=4", "trainer.max_epochs=1", "logger=none"]
    args = ["data=image_folder", f"data.root={tree}", "data.image_size=16", *small]
    args += ["data.val_fraction=0.2"]  # one validation image of each of the 3 classes
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "on image_folder (10 train / 4 val / 4 test)" in result.stdout + result.stderr
    victim = _truncate(tree)
    result = run_train_py(args, cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("reglab: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert errors[0].startswith(f"reglab: error: data.root: {victim}")
