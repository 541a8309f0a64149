"""Early stopping on a real plateau, with the test metric from the best epoch's checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from conftest import read_metrics
from reglab.config import monitor_mode, validate
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.run import train


def test_stops_on_a_plateau_and_tests_the_best_checkpoint(make_cfg, tmp_path):
    # 30 % noisy training labels: once the net memorizes them, the validation loss rises.
    cfg = make_cfg(
        "model=mlp",
        "model.width=512",
        "model.dropout=0.0",
        "data.label_noise=0.3",
        "trainer.max_epochs=60",
        "logger=none",
    )
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert metrics["stopped_epoch"] is not None and metrics["epochs_run"] < 60
    assert metrics["stopped_epoch"] == metrics["best_epoch"] + cfg.early_stopping.patience
    val_losses = [row["val/loss"] for row in metrics["history"]]
    # Epochs count from 1: val_losses[best_epoch:] are the epochs after the best one.
    assert val_losses[metrics["best_epoch"] - 1] == metrics["best_val/loss"]
    assert min(val_losses[metrics["best_epoch"] :]) > metrics["best_val/loss"]

    module = RegLabModule.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True).eval()
    test = instantiate(cfg.data).splits["test"]
    with torch.no_grad():
        logits = module(test.x)
    assert metrics["test"]["test/loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, test.y).item(), rel=1e-5
    )
    assert metrics["test"]["test/acc"] == pytest.approx(
        (logits.argmax(1) == test.y).float().mean().item(), abs=1e-6
    )


def test_val_acc_option_monitors_accuracy_for_checkpoint_and_stopping(make_cfg):
    cfg = make_cfg("early_stopping=val_acc")
    validate(cfg)  # settles monitor_mode: auto
    assert (cfg.monitor, cfg.monitor_mode) == ("val/acc", "max")
    assert cfg.early_stopping.monitor == cfg.callbacks.model_checkpoint.monitor == "val/acc"
    assert cfg.early_stopping.mode == cfg.callbacks.model_checkpoint.mode == "max"


def test_accuracy_monitor_on_regression_fails_before_training(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="monitor.*val/r2"):
        train(make_cfg("model=fit_tanh", "data=function", "early_stopping=val_acc"))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_label_noise_touches_only_the_training_labels():
    from reglab.data import DigitsDataModule

    clean, noisy = DigitsDataModule(), DigitsDataModule(label_noise=0.3)
    changed = (clean.splits["train"].y != noisy.splits["train"].y).float().mean().item()
    assert 0.2 < changed <= 0.3  # 30 % relabelled uniformly: about 9/10 of them change
    for split in ("val", "test"):
        assert torch.equal(clean.splits[split].y, noisy.splits[split].y)
    half = DigitsDataModule(train_fraction=0.5)
    assert len(half.splits["train"].y) == round(0.5 * len(clean.splits["train"].y))


@pytest.mark.parametrize(
    ("monitor", "mode", "expected"),
    [
        ("val/acc", "auto", "max"),
        ("val/f1", "auto", "max"),
        ("val/r2", "auto", "max"),
        ("val/loss", "auto", "min"),
        ("val/mse", "auto", "min"),
        ("val/acc", "max", "max"),
        ("val/acc", "min", None),
        ("val/loss", "max", None),
    ],
)
def test_monitor_mode_follows_the_metric_and_refuses_the_wrong_way(monitor, mode, expected):
    if expected is None:
        with pytest.raises(ConfigError, match=f"monitor_mode: {monitor} improves toward"):
            monitor_mode(monitor, mode)
    else:
        assert monitor_mode(monitor, mode) == expected


def test_monitor_val_acc_alone_keeps_the_checkpoint_with_the_highest_accuracy(make_cfg, tmp_path):
    # Only `monitor` changes (early stopping off): the checkpoint and best epoch must follow it upward.
    cfg = make_cfg(
        "model=mlp",
        "model.width=32",
        "monitor=val/acc",
        "early_stopping=none",
        "trainer.max_epochs=6",
        "optimizer.lr=3e-3",
        "logger=none",
    )
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    accuracies = [row["val/acc"] for row in metrics["history"]]
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i))
    assert metrics["monitor_mode"] == "max"
    assert metrics["best_epoch"] == best + 1  # epochs count from 1
    assert Path(metrics["best_checkpoint"]).name == f"epoch_{best + 1:03d}.ckpt"
    assert accuracies[best] > min(accuracies)  # the worst epoch would have been picked with min
