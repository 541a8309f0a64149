"""What TensorBoard shows: curves first, monitors last on the same x-axis, baselines with the same
`reg/` curves, a short HPARAMS row, a visible augmentation picture and short sweep job names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import compose_config, quiet_trainer, read_metrics
from reglab.callbacks import WeightPenalty
from reglab.callbacks.batch_augmentation import picture
from reglab.data import DigitsDataModule
from reglab.module import RegLabModule
from reglab.run import train
from reglab.tensorboard import (
    TensorBoard,
    compared_keys,
    final_metrics,
    hparams,
    mark_compared,
    run_name,
    swept_keys,
    tag,
)

SPEC = {"layers": ["flatten", {"linear": {"out_features": 16}}, "relu", "dropout"]}


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return events


def _steps(events: EventAccumulator, name: str) -> list[int]:
    return [event.step for event in events.Scalars(name)]


# --- tag groups and x-axis ------------------------------------------------------------------------
def test_a_run_opens_on_train_and_val_and_shows_the_monitors_last(make_cfg, tmp_path):
    train(
        make_cfg(
            "model=cnn",
            "model.channels=4",
            "augmentation=image",
            "regularization=l1",
            "trainer.max_epochs=4",
            "callbacks.activation_monitor.every_n_epochs=2",
        )
    )
    events = _events(tmp_path / "run")
    tags = [*events.Tags()["scalars"], *events.Tags()["images"]]
    # TensorBoard groups by the first word, sorts groups by character code, opens the first two.
    groups = sorted({name.split("/", 1)[0] for name in tags})
    assert groups[:2] == ["Train", "Val"], groups
    assert groups[-1] == "watch", groups
    assert {"Train/loss", "Train/acc", "Val/loss", "Val/acc", "reg/l1_norm"} <= set(tags)
    assert not [name for name in tags if name.startswith(("train/", "val/", "activations/"))]

    # The monitors share the curves' x-axis (the global step): init, then after epochs 2 and 4.
    epoch_ends = _steps(events, "Train/loss")
    assert len(epoch_ends) == 4 and epoch_ends == _steps(events, "Val/loss")
    assert _steps(events, "watch/weight_norm/head.weight") == [0, epoch_ends[1], epoch_ends[3]]
    assert _steps(events, "watch/activation_mean/head") == [0, epoch_ends[1], epoch_ends[3]]
    assert _steps(events, "reg/l1_norm") == epoch_ends
    (image,) = events.Images("watch/augmentation")
    assert (image.width, image.height) == (262 * 2 + 8, 262)  # 4 x 4 of 64 x 64, twice


def test_tag_capitalizes_train_and_val_only():
    assert tag("train/loss") == "Train/loss"
    assert tag("val/acc") == "Val/acc"
    assert tag("train/loss_step") == "Train/loss_step"
    for kept in ("test/acc", "reg/l1_norm", "best/val/loss", "epoch", "trainer/x", "validation"):
        assert tag(kept) == kept


# --- penalty-free baselines -----------------------------------------------------------------------
def test_a_penalty_free_run_logs_the_reg_curves_at_strength_zero(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "model.width=16", "regularization=none", "trainer.max_epochs=2"))
    events = _events(tmp_path / "run")
    epoch_ends = _steps(events, "Train/loss")
    for name in ("reg/l1_norm", "reg/l2_norm", "reg/zero_fraction", "reg/strength"):
        assert _steps(events, name) == epoch_ends, name
    assert [e.value for e in events.Scalars("reg/strength")] == [0.0, 0.0]
    assert [e.value for e in events.Scalars("reg/penalty")] == [0.0, 0.0]
    final = read_metrics(tmp_path / "run")["final"]  # and the report's baseline row has them
    assert final["reg/zero_fraction"] == 0.0 and final["reg/l1_norm"] > 0
    assert final["reg/objective"] == pytest.approx(final["reg/data_loss"])


def test_the_baseline_logs_the_norms_of_the_default_weights_and_adds_no_gradient(monkeypatch):
    def no_gradient_work(*args, **kwargs):
        raise AssertionError("a baseline must not touch the gradients")

    baseline = WeightPenalty.baseline()
    monkeypatch.setattr(baseline.penalty, "add_gradient", no_gradient_work)
    monkeypatch.setattr(baseline.penalty, "proximal_step", no_gradient_work)
    L.seed_everything(0)
    module = RegLabModule(SPEC, [64], 10)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, callbacks=[baseline])
    trainer.fit(module, datamodule=DigitsDataModule(layout="flat"))
    weights = [p.detach() for name, p in module.named_parameters() if p.ndim > 1]
    flat = torch.cat([w.reshape(-1) for w in weights])
    metrics = trainer.callback_metrics
    assert metrics["reg/strength"].item() == 0.0
    assert metrics["reg/penalty"].item() == 0.0
    assert metrics["reg/l1_norm"].item() == pytest.approx(flat.abs().sum().item(), rel=1e-5)
    assert metrics["reg/zero_fraction"].item() == (flat == 0).float().mean().item()
    assert not baseline.penalizes()


# --- the HPARAMS row ------------------------------------------------------------------------------
CHOICES = {
    "model": "mlp",
    "data": "digits",
    "optimizer": "sgd",
    "scheduler": "none",
    "regularization": "l1",
    "dropout": "none",
    "batchnorm": "none",
    "augmentation": "noise",
    "early_stopping": "none",
    "hydra/launcher": "basic",
}
COMMAND = [
    "model=mlp",
    "optimizer=sgd",
    "regularization=l1",
    "augmentation=noise",
    "early_stopping=none",
    "regularization.strength=0.001",
    "optimizer.lr=0.02",
    "seed=3",
    "print_config=false",
    "callbacks.activation_monitor.every_n_epochs=2",
]


def test_hparams_are_the_command_line_and_each_groups_main_knobs(tmp_path):
    cfg = compose_config(COMMAND, tmp_path)
    row = hparams(cfg, CHOICES, [*COMMAND, f"paths.output_dir={tmp_path}"])
    assert row["model"] == "mlp" and row["model.width"] == 256 and row["model.depth"] == 2
    assert row["data"] == "digits" and row["data.batch_size"] == 64
    assert row["optimizer"] == "sgd" and row["optimizer.lr"] == 0.02
    assert row["optimizer.momentum"] == 0.9 and row["optimizer.weight_decay"] == 0.0
    assert row["regularization"] == "l1" and row["regularization.kind"] == "l1"
    assert row["regularization.strength"] == 0.001 and row["regularization.method"] == "gradient"
    assert row["augmentation"] == "noise" and row["dropout"] == "none"
    assert row["early_stopping"] == "none" and row["seed"] == 3 and row["tags"] == "dev"
    assert len(row) <= 30
    for key, value in row.items():
        assert isinstance(value, str | int | float | bool), (key, value)
        assert "_target_" not in key and "paths" not in key and "callbacks" not in key, key
        assert not str(value).startswith("/") and "reglab." not in str(value), (key, value)
    assert "print_config" not in row and "regularization.l1_ratio" not in row


def test_the_baseline_row_says_kind_none_and_strength_zero(tmp_path):
    command = ["model=mlp", "regularization=none", "regularization.strength=0.01", "seed=1"]
    cfg = compose_config(command, tmp_path)
    row = hparams(cfg, {**CHOICES, "regularization": "none"}, command)
    assert row["regularization"] == "none"
    assert row["regularization.kind"] == "none" and row["regularization.strength"] == 0.0
    assert not {"regularization.method", "regularization.l1_ratio"} & set(row)


def test_hparams_without_hydra_take_the_options_from_the_command_line(tmp_path):
    command = ["model=cnn", "regularization=l2", f"ckpt_path={tmp_path}/x.ckpt"]
    row = hparams(compose_config(command, tmp_path), None, command)
    assert row["model"] == "cnn" and row["regularization"] == "l2"
    assert "ckpt_path" not in row


def _experiment(log_dir: Path) -> tuple[EventAccumulator, Any]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    return events, HParamsPluginData.FromString(content).experiment


def test_a_runs_hparams_row_has_its_final_metrics_and_shows_the_compared_keys_first(
    make_cfg, tmp_path
):
    train(make_cfg("model=mlp", "model.width=16", "regularization=l2", "trainer.max_epochs=2"))
    events, experiment = _experiment(tmp_path / "run" / "tensorboard")
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert metrics == [
        "test/loss",
        "test/acc",
        "test/f1",
        "best/val/loss",
        "best/val/acc",
        "best/val/f1",
    ]
    record = read_metrics(tmp_path / "run")
    assert [e.value for e in events.Scalars("best/val/loss")] == [record["best"]["val/loss"]]
    assert _steps(events, "best/val/loss") == _steps(events, "test/acc")[-1:]  # the last step
    names = {info.name for info in experiment.hparam_infos}
    assert {"model", "model.width", "regularization.kind", "optimizer.lr", "seed"} <= names
    assert not [name for name in names if "_target_" in name or name.startswith("paths")]
    shown_first = {info.name for info in experiment.hparam_infos if info.differs}
    assert shown_first == {"model", "regularization", "regularization.strength"}


def test_compared_keys_are_the_command_lines_and_the_model_and_penalty(tmp_path):
    row = hparams(compose_config(COMMAND, tmp_path), CHOICES, COMMAND)
    assert compared_keys(row, COMMAND) == {
        "model",
        "optimizer",
        "regularization",
        "augmentation",
        "early_stopping",
        "regularization.strength",
        "optimizer.lr",
        "seed",
    }


def test_the_hparams_summary_names_the_metrics_as_written(tmp_path):
    summary = {
        "test": {"test/acc": 0.9, "test/loss": 0.3},
        "best": {"epoch": 3, "val/loss": 0.25, "val/acc": 0.93, "train/loss": 0.1},
    }
    metrics = final_metrics(summary)
    assert metrics == {
        "test/acc": 0.9,
        "test/loss": 0.3,
        "best/val/loss": 0.25,
        "best/val/acc": 0.93,
    }
    # Lightning's own log_hyperparams through the logger: the columns name the written tags.
    logger = TensorBoard(save_dir=str(tmp_path), name="", version="", default_hp_metric=False)
    row = hparams(compose_config(COMMAND, tmp_path), CHOICES, COMMAND)
    logger.log_hyperparams(row, metrics={**metrics, "val/loss": 0.3}, step=7)
    logger.finalize("success")
    events, experiment = _experiment(tmp_path)
    names = {info.name.tag for info in experiment.metric_infos}
    assert names == {"test/acc", "test/loss", "best/val/loss", "best/val/acc", "Val/loss"}
    assert {info.name for info in experiment.hparam_infos} == set(row)
    assert _steps(events, "Val/loss") == [7]


def test_marking_compared_keys_changes_only_their_differs_flag():
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    experiment, _, _ = hparams_summaries({"a": 1.0, "b": "x", "c": True}, {"m": 0.5})
    mark_compared(experiment, {"b", "c"})
    content = experiment.value[0].metadata.plugin_data.content
    infos = HParamsPluginData.FromString(content).experiment.hparam_infos
    assert [(info.name, info.differs) for info in infos] == [
        ("a", False),
        ("b", True),
        ("c", True),
    ]


# --- the augmentation picture ---------------------------------------------------------------------
def test_the_picture_shows_the_original_left_and_the_augmented_right_upscaled():
    torch.manual_seed(0)
    original = torch.rand(20, 1, 8, 8)
    augmented = original.flip(-1)
    image = picture(original[:16], augmented[:16])
    assert image.shape == (1, 262, 262 * 2 + 8)
    left, right = image[:, :, :262], image[:, :, 262 + 8 :]
    # Sample 5 sits in row 1, column 1; nearest-neighbour upscaling repeats each pixel 8 x 8.
    cell = slice(66, 66 + 64)
    low, high = original[5].min(), original[5].max()  # the pair's range: flipped, the same
    expected = (
        ((original[5] - low) / (high - low)).repeat_interleave(8, -2).repeat_interleave(8, -1)
    )
    torch.testing.assert_close(left[:, cell, cell], expected)
    torch.testing.assert_close(right[:, cell, cell], expected.flip(-1))
    assert (image[:, :, 262 : 262 + 8] == 1).all()  # the white band between the halves
    assert (left[:, 64:66, :] == 1).all() and (left[:, :, 64:66] == 1).all()  # the gaps


def test_the_picture_keeps_small_images_visible_and_large_ones_as_they_are():
    assert picture(torch.rand(3, 3, 32, 32), columns=4).shape == (3, 64, 64 * 3 + 4)
    assert picture(torch.rand(1, 1, 100, 80)).shape == (1, 100, 80)


# --- short sweep job names ------------------------------------------------------------------------
def test_a_sweep_job_is_named_by_its_number_and_the_swept_overrides():
    sweep = OmegaConf.create(
        {
            "hydra": {
                "overrides": {
                    "task": [
                        "model=mlp",
                        "early_stopping=none",
                        "print_config=false",
                        "regularization=none,l1",
                        "+data.label_noise=0.1,0.2",
                        "seed=range(3)",
                    ]
                },
                "sweeper": {"params": {"optimizer.lr": "0.01,0.1", "model.width": "64"}},
            }
        }
    )
    swept = swept_keys(sweep)
    assert swept == {"regularization", "data.label_noise", "seed", "optimizer.lr"}
    job = [
        "optimizer.lr=0.1",
        "model.width=64",
        "model=mlp",
        "early_stopping=none",
        "print_config=false",
        "regularization=l1",
        "+data.label_noise=0.2",
        "seed=2",
    ]
    assert (
        run_name(7, job, swept)
        == "7_optimizer.lr=0.1,regularization=l1,+data.label_noise=0.2,seed=2"
    )
    assert run_name(0, ["model=mlp"], set()) == "0"
