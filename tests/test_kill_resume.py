"""Resume = uninterrupted: a run killed with SIGKILL mid-training and resumed from its folder ends
with the same weights, best epoch and test metrics as the run that was never stopped (CPU, fixed
seed, dropout and augmentation drawing random numbers every step)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from conftest import read_metrics, run_train_py, start_train_py

# Label noise makes the best epoch come early and early stopping end the run some epochs later,
# so the kill lands between the best epoch and the stop: the resumed run must carry both.
RUN = [
    "model=mlp",
    "model.width=64",
    "model.dropout=0.3",
    "augmentation=noise",
    "data.label_noise=0.3",
    "data.batch_size=32",
    "early_stopping.patience=4",
    "trainer.max_epochs=40",
    "logger=none",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "callbacks.last_checkpoint.min_seconds_between_saves=0",  # last.ckpt every epoch
]


def _run_folder(cwd: Path) -> Path:
    (metrics,) = (cwd / "outputs").rglob("metrics.json")
    return metrics.parent


def _last_epoch(run_dir: Path) -> int | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    return torch.load(last, map_location="cpu", weights_only=False)["epoch"]


def _kill_after_epoch(cwd: Path, epoch: int, timeout: float = 300) -> Path:
    """Start the run, SIGKILL it once last.ckpt holds a finished epoch >= `epoch`; its folder."""
    process = start_train_py(RUN, cwd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list((cwd / "outputs").glob("runs/*/*/checkpoints/last.ckpt"))
        if found and (_last_epoch(found[0].parents[1]) or 0) >= epoch:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            return found[0].parents[1]
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"epoch {epoch} never finished")


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]


@pytest.mark.slow  # three runs of ~10 s each; CI runs the slow tests
def test_a_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    (tmp_path / "whole").mkdir()
    whole = run_train_py(RUN, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    reference = read_metrics(_run_folder(tmp_path / "whole"))
    best, stopped = reference["best_epoch"], reference["stopped_epoch"]
    assert stopped is not None and best < stopped - 1, reference["history"]

    (tmp_path / "killed").mkdir()
    # last.ckpt's `epoch` is Lightning's 0-based one: `best` (counted from 1) is the epoch after it.
    killed_dir = _kill_after_epoch(tmp_path / "killed", best)
    assert not (killed_dir / "metrics.json").exists()
    resumed = run_train_py([*RUN, f"ckpt_path={killed_dir}"], tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (resumed_dir,) = [
        p for p in (tmp_path / "killed" / "outputs").glob("runs/*/*") if p != killed_dir
    ]
    result = read_metrics(resumed_dir)

    assert result["best_epoch"] == best and result["stopped_epoch"] == stopped
    assert result["test"] == reference["test"]  # the same best checkpoint, tested
    assert result["history"] == reference["history"]
    ours, theirs = _final_weights(resumed_dir), _final_weights(_run_folder(tmp_path / "whole"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    # The best checkpoint lives in the resumed run's own folder, as in an uninterrupted run.
    assert Path(result["best_checkpoint"]).parent == resumed_dir / "checkpoints"
