"""Runs that survive: last.ckpt at epoch ends, SIGINT/SIGTERM recorded as interrupted, resume from a folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, read_metrics, start_train_py
from reglab.callbacks import RunCheckpoint
from reglab.errors import ConfigError
from reglab.run import train

LONG_RUN = [
    "model=mlp",
    "model.width=16",
    "trainer.max_epochs=500",
    "early_stopping=none",
    "logger=none",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "callbacks.last_checkpoint.min_seconds_between_saves=0",  # last.ckpt every epoch
]


def _wait_for_last_checkpoint(cwd: Path, process: subprocess.Popen, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((cwd / "outputs").glob("runs/*/*/checkpoints/last.ckpt"))
        if found:
            return found[0].parents[1]
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    raise AssertionError("no last.ckpt appeared")


@pytest.mark.slow  # about 20 s or more; CI runs the slow tests
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_nonzero_recorded_as_interrupted_and_it_resumes(tmp_path, sig):
    process = start_train_py(LONG_RUN, tmp_path)
    run_dir = _wait_for_last_checkpoint(tmp_path, process)
    time.sleep(1.0)  # a few more epochs
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("reglab: interrupted")]
    assert len(lines) == 1 and f"ckpt_path={run_dir}" in lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    record = read_metrics(run_dir)
    assert record["status"] == "interrupted"
    last = torch.load(record["last_checkpoint"], map_location="cpu", weights_only=False)
    interrupted_epoch = int(record["error"].split("epoch ")[1])
    # The message counts from 1, the checkpoint's `epoch` is Lightning's 0-based one.
    assert last["epoch"] + 1 in (interrupted_epoch - 1, interrupted_epoch)

    resumed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *LONG_RUN[:2],
            f"trainer.max_epochs={last['epoch'] + 3}",
            *LONG_RUN[3:],
            f"ckpt_path={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (new,) = [p for p in (tmp_path / "outputs").rglob("metrics.json") if p.parent != run_dir]
    metrics = json.loads(new.read_text())
    assert metrics["status"] == "ok"
    # It went on from the checkpoint to max_epochs (history epochs count from 1).
    assert metrics["history"][-1]["epoch"] == last["epoch"] + 3


def test_last_checkpoint_holds_the_final_epoch_of_an_early_stopped_run(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=mlp",
        "model.width=512",
        "model.dropout=0.0",
        "data.label_noise=0.3",
        "trainer.max_epochs=60",
        "early_stopping.patience=2",
        "logger=none",
    )
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert (
        metrics["stopped_epoch"] is not None and metrics["stopped_epoch"] != metrics["best_epoch"]
    )
    last = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    best = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)
    # metrics.json counts epochs from 1; Lightning's `epoch` in a checkpoint is 0-based.
    assert last["epoch"] + 1 == metrics["stopped_epoch"]  # not the best epoch
    assert best["epoch"] + 1 == metrics["best_epoch"]


@pytest.mark.parametrize(("interval", "writes"), [(0, 5), (1000, 1)])
def test_last_checkpoint_is_written_at_most_every_interval_and_at_the_final_epoch(
    make_cfg, tmp_path, monkeypatch, interval, writes
):
    written: list[str] = []
    save = RunCheckpoint._save_checkpoint

    def counted(self, trainer, filepath):
        written.append(Path(filepath).name)
        save(self, trainer, filepath)

    monkeypatch.setattr(RunCheckpoint, "_save_checkpoint", counted)
    cfg = make_cfg(
        "model=mlp",
        "model.width=16",
        "trainer.max_epochs=5",
        "early_stopping=none",
        "logger=none",
        f"callbacks.last_checkpoint.min_seconds_between_saves={interval}",
    )
    train(cfg)
    assert written.count("last.ckpt") == writes
    last = torch.load(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert last["epoch"] == 4  # the final epoch, whatever the interval


def test_a_missing_checkpoint_is_refused_before_training(make_cfg, tmp_path):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", f"ckpt_path={tmp_path / 'nowhere'}"))
    assert error.value.key == "ckpt_path"
    assert not (tmp_path / "run" / "metrics.json").exists()
