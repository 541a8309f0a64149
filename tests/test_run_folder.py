"""The run folder before training: one process per sweep job, no stale result left beside new
overrides, and an unwritable folder or a full disk refused with one line before training."""

from __future__ import annotations

import fcntl
import json
from collections import namedtuple
from pathlib import Path

import lightning as L
import pytest

from conftest import SMALL_RUN, read_metrics, run_records, run_train_in_process, run_train_py
from reglab import run_folder
from reglab.errors import ConfigError, RunInterrupted
from reglab.run import run_one
from reglab.run_folder import LOCK_FILE, JobBusy, job_lock


def test_a_held_job_lock_is_refused_and_released_after_the_block(tmp_path):
    with job_lock(tmp_path), pytest.raises(JobBusy), job_lock(tmp_path):
        pass
    with job_lock(tmp_path):  # released: taken again
        pass


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_a_sweep_resumed_while_another_process_runs_a_job_skips_that_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *SMALL_RUN, "trainer.max_epochs=1", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    first = run_train_py(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    busy, free = sorted(p.parent for p in sweep.rglob("metrics.json"))
    for job in (busy, free):  # both must run again: neither is "ok" now
        (job / "metrics.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    with open(busy / LOCK_FILE, "w") as handle:  # "another process" is running job 0
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        resumed = run_train_py([*args, f"+resume_sweep={sweep}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"skipping job {busy.name}: another process is running it" in resumed.stdout
    assert read_metrics(busy)["status"] == "failed"  # untouched: the other process owns it
    assert read_metrics(free)["status"] == "ok"


def test_a_failing_run_into_a_finished_run_folder_leaves_no_stale_ok(make_cfg, tmp_path):
    run_one(make_cfg(*SMALL_RUN, "trainer.max_epochs=1"))
    run_dir = tmp_path / "run"
    assert read_metrics(run_dir)["status"] == "ok"
    assert list((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    with pytest.raises(ConfigError):  # fails while building: after the folder was cleared
        run_one(make_cfg(*SMALL_RUN, "model.width=16", "data.val_fraction=0.001"))
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "checkpoints").exists()


def test_a_resume_from_its_own_folder_keeps_the_checkpoint(make_cfg, tmp_path):
    run_one(make_cfg(*SMALL_RUN, "trainer.max_epochs=1", "early_stopping=none"))
    run_dir = tmp_path / "run"
    run_one(
        make_cfg(*SMALL_RUN, "trainer.max_epochs=2", "early_stopping=none", f"ckpt_path={run_dir}")
    )
    record = read_metrics(run_dir)
    assert [row["epoch"] for row in record["history"]] == [1, 2]


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL_RUN, "trainer.max_epochs=1")
    cfg.paths.output_dir = "/proc/reglab-unwritable/run"  # not writable, even for root
    with pytest.raises(ConfigError) as error:
        run_one(cfg)
    assert error.value.key == "paths.output_dir"
    assert "cannot write in /proc/reglab-unwritable/run/checkpoints" in str(error.value)


def test_a_checkpoints_path_that_is_a_file_is_refused(make_cfg, tmp_path, monkeypatch):
    # The folder is cleared of earlier attempts first; a file that appears as checkpoints/
    # afterwards (a user's, a mount) still stops the run before training.
    cfg = make_cfg(*SMALL_RUN, "trainer.max_epochs=1")
    monkeypatch.setattr("reglab.run.clear_previous_attempt", lambda *args: None)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("not a folder")
    with pytest.raises(ConfigError) as error:
        run_one(cfg)
    assert error.value.key == "paths.output_dir"


def test_a_full_disk_is_refused_before_training(make_cfg, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**6))
    with pytest.raises(ConfigError) as error:
        run_one(make_cfg(*SMALL_RUN, "trainer.max_epochs=1"))
    assert error.value.key == "paths.output_dir"
    assert "only 1 MB free" in str(error.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["hydra.run.dir=/proc/reglab-x"],
        ["-m", "seed=1,2", "hydra.sweep.dir=/proc/reglab-x/${now:%H}"],
    ],
    ids=["run", "sweep"],
)
def test_train_py_refuses_a_hydra_folder_it_cannot_create_with_one_line(tmp_path, args):
    result = run_train_py(args, tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("reglab: error: hydra.") and "cannot write in '/proc/reglab-x'" in line
    assert not run_records(tmp_path)


def test_help_creates_no_folder(tmp_path):
    assert run_train_py(["--cfg", "job"], tmp_path).returncode == 0
    assert not (tmp_path / "outputs").exists()
    assert Path(tmp_path).exists()


# A run that keeps nothing (debug=fdr, keep_outputs=false) removes what it wrote, never a folder
# it did not create nor a file that was there before it (issue 19: a user's folder vanished).


def _users_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "mine.txt").write_text("a user's own file")
    (folder / "data.csv").write_text("x,y\n1,2\n")
    return folder


def _user_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.mark.parametrize("keep_nothing", ["debug=fdr", "keep_outputs=false"])
def test_a_run_that_keeps_nothing_leaves_an_existing_folder_and_its_files(
    make_cfg, tmp_path, keep_nothing
):
    folder = _users_folder(tmp_path)
    run_one(make_cfg(*SMALL_RUN, "trainer.max_epochs=1", keep_nothing))
    assert _user_files(folder) == ["data.csv", "notes", "notes/mine.txt"]
    assert (folder / "notes" / "mine.txt").read_text() == "a user's own file"


def test_a_run_that_keeps_nothing_removes_a_folder_it_created(make_cfg, tmp_path):
    run_one(make_cfg(*SMALL_RUN, "trainer.max_epochs=1", "keep_outputs=false"))
    assert not (tmp_path / "run").exists()


class _InterruptAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        raise KeyboardInterrupt  # Lightning's answer to Ctrl-C: the run records "interrupted"


def test_an_interrupted_run_that_keeps_nothing_leaves_no_result_in_an_existing_run_folder(
    make_cfg, tmp_path
):
    # An earlier run's folder, with a user's file added: the new run's checkpoints and its
    # "interrupted" metrics.json go; the earlier result and the user's file stay as they were.
    run_one(make_cfg(*SMALL_RUN, "trainer.max_epochs=1"))
    folder = tmp_path / "run"
    (folder / "mine.txt").write_text("a user's own file")
    earlier = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(RunInterrupted):
        run_one(
            make_cfg(*SMALL_RUN, "trainer.max_epochs=3", "keep_outputs=false"),
            [_InterruptAfterFirstEpoch()],
        )
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == earlier
    assert read_metrics(folder)["status"] == "ok"  # the earlier run's record


@pytest.mark.parametrize("keep_nothing", ["debug=fdr", "keep_outputs=false"])
def test_train_py_keeping_nothing_in_an_existing_hydra_run_dir_removes_only_its_own(
    tmp_path, keep_nothing
):
    folder = _users_folder(tmp_path)
    args = [*SMALL_RUN, "trainer.max_epochs=1", keep_nothing, f"hydra.run.dir={folder}"]
    assert run_train_in_process(args, tmp_path) == 0
    # Hydra's .hydra/ and train.log and every output of the run are gone; the user's files stay.
    assert _user_files(folder) == ["data.csv", "notes", "notes/mine.txt"]


def test_train_py_keeping_nothing_removes_the_hydra_run_dir_it_created(tmp_path):
    folder = tmp_path / "new" / "run"
    args = [*SMALL_RUN, "debug=fdr", f"hydra.run.dir={folder}"]
    assert run_train_in_process(args, tmp_path) == 0
    assert not folder.exists()


@pytest.mark.slow  # a real subprocess; CI runs the slow tests
def test_train_py_debug_fdr_into_a_users_folder_keeps_the_users_file(tmp_path):
    folder = _users_folder(tmp_path)
    result = run_train_py(["debug=fdr", *SMALL_RUN, f"hydra.run.dir={folder}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _user_files(folder) == ["data.csv", "notes", "notes/mine.txt"]
