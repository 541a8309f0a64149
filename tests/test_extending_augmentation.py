"""A new augmentation op is one factory and one YAML file: a toy `invert`, registered from here alone.

The factory is registered in `reglab.augment.OPS`; its YAML file (written by the test into its own
config folder, added through `hydra.searchpath`) inherits the shared keys from
`augmentation/base.yaml`. Nothing else in reglab is touched. Also here: the grid of augmented
images is logged once per run, across a stop and a resume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from conftest import SMALL_RUN, compose_config, run_records, run_train_in_process
from reglab.augment import OPS, Op
from reglab.callbacks import BatchAugmentation
from reglab.checks import number
from reglab.data import DigitsDataModule
from reglab.errors import ConfigError
from reglab.run import run_one

# Shapes of the batches the toy op saw, in order (module level: the run builds its own module).
SEEN: list[tuple[int, ...]] = []


class Invert(nn.Module):
    """x * scale, recording each batch's shape in SEEN."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(tuple(x.shape))
        return self.scale * x


def build_invert(input_shape: tuple[int, ...], scale: float = -1.0) -> nn.Module:
    """The toy op's factory: checks its own argument, builds the module."""
    return Invert(number("scale", scale, -1.0, 1.0))


YAML = """\
# Inputs times `scale` (a toy op registered by a test).
defaults:
  - base
  - _self_
ops:
  - invert: {scale: -1.0}
log_images: false
"""


OPTION = ("augmentation", "toy", YAML)  # conftest's conf_dir writes it into a config folder


@pytest.fixture
def invert(register) -> Iterator[None]:
    register(OPS, "invert", Op(build_invert))
    SEEN.clear()
    yield
    SEEN.clear()


def _run_args(conf_dir: str) -> list[str]:
    return [conf_dir, *SMALL_RUN, "trainer.max_epochs=1", "callbacks=none"]


class _Stub(nn.Module):
    """What BatchAugmentation.check reads from a model: hparams and task."""

    def __init__(self, input_shape: list[int], task: str = "classification") -> None:
        super().__init__()
        self.hparams = {"input_shape": input_shape, "num_outputs": 3}
        self.task = task


def test_the_new_op_is_built_from_its_table_entry(invert):
    augmentation = BatchAugmentation(ops=[{"invert": {"scale": -0.5}}, {"noise": {"std": 0.0}}])
    augmentation.check(_Stub([3, 4, 4]))
    x, y = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    mx, my = augmentation((x, y))
    torch.testing.assert_close(mx, -0.5 * x)
    assert my is y
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(ops=[{"invert": {"factor": 2}}])
    assert error.value.key == "ops[0].invert"
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(ops=[{"invert": {"scale": 2}}]).check(_Stub([64]))
    assert error.value.key == "ops[0].invert.scale"


def test_a_run_with_the_new_option_inverts_training_batches_only(invert, conf_dir, tmp_path):
    code = run_train_in_process([*_run_args(conf_dir), "augmentation=toy"], cwd=tmp_path)
    assert code == 0
    (metrics,) = run_records(tmp_path)
    assert metrics["status"] == "ok"
    # Every training batch (digits: (1, 8, 8), 64 a batch) inverted once, one epoch; validation
    # and test batches (and the model summary's example input) never.
    train_size = len(DigitsDataModule().splits["train"].x)
    assert len(SEEN) == -(-train_size // 64)
    assert all(shape[1:] == (1, 8, 8) for shape in SEEN)
    assert sum(shape[0] for shape in SEEN) == train_size


def test_a_sweep_over_a_built_in_and_the_new_option(invert, conf_dir, tmp_path):
    code = run_train_in_process(
        ["-m", *_run_args(conf_dir), "augmentation=noise,toy"], cwd=tmp_path
    )
    assert code == 0
    records = run_records(tmp_path)
    assert len(records) == 2
    assert all(record["status"] == "ok" for record in records)
    assert sorted(o for r in records for o in r["overrides"] if "augmentation" in o) == [
        "augmentation=noise",
        "augmentation=toy",
    ]
    assert SEEN  # the toy job augmented its training batches


# --- the grid is logged once per run, a resume included ---------------------------------------------


class _FakeTensorBoard:
    """Stands in for TensorBoardLogger: records add_images calls."""

    def __init__(self) -> None:
        self.images: list[tuple[str, tuple[int, ...], int]] = []
        self.experiment = self

    def add_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        self.images.append((tag, tuple(images.shape), step))


class _Trainer:
    def __init__(self, logger: _FakeTensorBoard, is_global_zero: bool = True) -> None:
        self.loggers, self.is_global_zero, self.global_step = [logger], is_global_zero, 0


@pytest.fixture
def fake_tensorboard(monkeypatch) -> _FakeTensorBoard:
    import reglab.callbacks.batch_augmentation as module

    monkeypatch.setattr(module, "TensorBoardLogger", _FakeTensorBoard)
    return _FakeTensorBoard()


def test_the_grid_state_survives_a_checkpoint(fake_tensorboard):
    batch = (torch.randn(40, 1, 8, 8), torch.zeros(40, dtype=torch.long))
    first = BatchAugmentation(ops=[{"noise": {"std": 0.1}}])
    for index in range(3):
        first.on_train_batch_start(_Trainer(fake_tensorboard), None, batch, index)
    # One picture: 16 images upscaled to 64 x 64 in a 4 x 4 grid with 2-pixel gaps.
    assert fake_tensorboard.images == [("watch/augmentation", (1, 1, 262, 262), 0)]

    resumed = BatchAugmentation(ops=[{"noise": {"std": 0.1}}])  # a new process, a new callback
    resumed.load_state_dict(first.state_dict())
    resumed.on_train_batch_start(_Trainer(fake_tensorboard), None, batch, 0)
    assert len(fake_tensorboard.images) == 1  # not again after the resume

    other_rank = BatchAugmentation()
    other_rank.on_train_batch_start(
        _Trainer(fake_tensorboard, is_global_zero=False), None, batch, 0
    )
    assert len(fake_tensorboard.images) == 1 and other_rank.logged  # rank zero logs, all agree


def _images(run_dir: Path) -> list:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tag = "watch/augmentation"
    return events.Images(tag) if tag in events.Tags()["images"] else []


def test_a_resumed_run_through_the_config_does_not_log_the_grid_again(tmp_path):
    common = [
        "model=cnn",
        "model.channels=4",
        "augmentation=image",
        "early_stopping=none",
        "callbacks.model_checkpoint.save_last=true",
        "data.train_fraction=0.2",
    ]
    run_one(compose_config([*common, "trainer.max_epochs=1"], tmp_path / "first"))
    assert len(_images(tmp_path / "first")) == 1
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run_one(
        compose_config([*common, "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path / "resumed")
    )
    assert _images(tmp_path / "resumed") == []
    assert len(json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"]) == 2
