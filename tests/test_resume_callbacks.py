"""A resumed run continues what the monitors recorded: no second "initialization", no epoch twice,
no second mode-audit listing. (The augmentation grid's resume is tested with the augmentation.)"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config, quiet_trainer, read_metrics
from reglab.callbacks import ActivationMonitor, EvalModeAudit
from reglab.data import DigitsDataModule
from reglab.module import RegLabModule
from reglab.run import run_one

SPEC = {"layers": ["flatten", {"linear": {"out_features": 16}}, "relu", "dropout"]}


def _fit(
    max_epochs: int, checkpoints: Path, ckpt_path: Path | None = None
) -> tuple[ActivationMonitor, EvalModeAudit]:
    """Fit a small net with fresh monitors (a new process would have fresh ones too)."""
    L.seed_everything(0)
    monitor, audit = ActivationMonitor(every_n_epochs=1), EvalModeAudit()
    trainer = quiet_trainer(
        max_epochs=max_epochs,
        limit_train_batches=3,
        enable_checkpointing=True,
        callbacks=[monitor, audit, ModelCheckpoint(dirpath=checkpoints, save_last=True)],
    )
    trainer.fit(
        RegLabModule(SPEC, [64], 10),
        datamodule=DigitsDataModule(layout="flat"),
        ckpt_path=ckpt_path,
    )
    return monitor, audit


def _audit_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "mode audit" in r.getMessage()]


def test_resume_keeps_the_monitor_records_and_the_audit_report(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reglab")
    first, first_audit = _fit(2, tmp_path / "first")
    assert [r["epoch"] for r in first.records] == [-1, 0, 1]
    assert len(_audit_messages(caplog)) == 2  # training and evaluation, once each
    assert first_audit.reported == {"training", "evaluation"}
    caplog.clear()

    resumed, resumed_audit = _fit(4, tmp_path / "resumed", tmp_path / "first" / "last.ckpt")
    assert [r["epoch"] for r in resumed.records] == [-1, 0, 1, 2, 3]
    # The initialization entry is the first run's, not a measurement of the resumed weights.
    assert resumed.records[:3] == first.records
    assert resumed.measured_init
    assert _audit_messages(caplog) == []
    assert resumed_audit.reported == {"training", "evaluation"}


def test_an_epoch_measured_again_replaces_its_record():
    # A checkpoint carrying epoch 0 and a run that measures epoch 0 again (as a resume that
    # repeats an epoch would): one record per epoch, the new measurement.
    empty = {"mean": {}, "var": {}, "weight_norm": {}}
    monitor = ActivationMonitor(every_n_epochs=1)
    monitor.load_state_dict(
        {"records": [{"epoch": -1, **empty}, {"epoch": 0, **empty}], "measured_init": True}
    )
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[monitor])
    trainer.fit(RegLabModule(SPEC, [64], 10), datamodule=DigitsDataModule(layout="flat"))
    assert [r["epoch"] for r in monitor.records] == [-1, 0]
    assert monitor.records[0]["mean"] == {}  # initialization: not measured again
    assert monitor.records[1]["mean"]  # epoch 0: measured now


def _weight_steps(run_dir: Path) -> list[int]:
    return _steps(run_dir, "watch/weight_norm/head.weight")


def _epoch_end_steps(run_dir: Path) -> list[int]:
    """The steps of the training curve: the step of each epoch's last batch."""
    return _steps(run_dir, "Train/loss")


def _steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_a_resumed_run_through_the_config_logs_only_its_own_epochs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reglab")
    common = [
        "model=mlp",
        "model.width=16",
        "early_stopping=none",
        "callbacks.activation_monitor.every_n_epochs=1",
        "callbacks.model_checkpoint.save_last=true",
    ]
    run_one(compose_config([*common, "trainer.max_epochs=2"], tmp_path / "first"))
    # At init, after epochs 1 and 2 (on the training curve's x-axis).
    assert _weight_steps(tmp_path / "first") == [0, *_epoch_end_steps(tmp_path / "first")]
    assert len(_weight_steps(tmp_path / "first")) == 3
    assert len(_audit_messages(caplog)) == 2
    caplog.clear()

    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run_one(
        compose_config([*common, "trainer.max_epochs=4", f"ckpt_path={last}"], tmp_path / "resumed")
    )
    # No step 0: the resumed weights are not logged as the net at initialization.
    assert _weight_steps(tmp_path / "resumed") == _epoch_end_steps(tmp_path / "resumed")[-2:]
    assert len(_weight_steps(tmp_path / "resumed")) == 2  # epochs 3 and 4
    assert _audit_messages(caplog) == []
    metrics = read_metrics(tmp_path / "resumed")
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3, 4]
