"""eval.py: a checkpoint tested again reproduces the training run's test metrics exactly.

One short training run through train.py's entry point (in-process, so Hydra saves the run's
.hydra/config.yaml as for a user) serves every test; eval.py runs in-process too, except for one
real `python eval.py` subprocess.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import (
    CONF_DIR,
    ROOT,
    SMALL_RUN,
    read_metrics,
    run_entry_in_process,
    run_train_in_process,
)
from reglab import checkpoint
from reglab.evaluate import EVAL_RECORD, eval_config, load_run_config, prepare

# The run of conftest's run_dir fixture.
TRAIN = [*SMALL_RUN, "trainer.max_epochs=3", "optimizer.lr=0.01"]
QUIET_EVAL = ["trainer.enable_progress_bar=false"]
MC_METRICS = ("test/mc_acc", "test/mc_loss", "test/mc_entropy", "test/mc_spread")


def run_eval_in_process(args: Sequence[str], cwd: Path) -> int:
    """`python eval.py <args>` inside this process; the exit code (0 when main returned)."""
    return run_entry_in_process("eval.py", [*QUIET_EVAL, *args], cwd)


def _eval(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "eval"
    tmp_path.mkdir(exist_ok=True)
    assert run_eval_in_process([*args, f"hydra.run.dir={out}"], tmp_path) == 0
    return json.loads((out / EVAL_RECORD).read_text())


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-7, abs_tol=1e-7)


def test_eval_of_the_run_folder_reproduces_the_run_test_metrics(run_dir, tmp_path, capsys):
    trained = read_metrics(run_dir)
    record = _eval(tmp_path, f"ckpt_path={run_dir}")
    assert record["test"] == trained["test"]  # exactly: same weights, data, order and dtype
    assert set(trained["test"]) == {"test/loss", "test/acc", "test/f1"}
    assert trained["test"]["test/acc"] > 0.8  # a trained model, not a lucky constant
    assert Path(record["ckpt_path"]) == Path(trained["best_checkpoint"]).resolve()
    assert Path(record["run_dir"]) == run_dir.resolve()
    assert record["checkpoint"]["epoch"] == trained["best_epoch"]
    assert record["status"] == "ok" and record["mc_samples"] is None
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("reglab: ")]
    # Which checkpoint and epoch (counted from 1, as metrics.json's best_epoch), then the result.
    assert (
        lines[0] == f"reglab: testing {trained['best_checkpoint']} (epoch {trained['best_epoch']})"
    )
    assert len(lines) == 2 and "test/acc=" in lines[1] and str(tmp_path / "eval") in lines[1]


def test_eval_of_the_checkpoint_file_reproduces_them_too(run_dir, tmp_path):
    trained = read_metrics(run_dir)
    best = run_dir / "checkpoints" / Path(trained["best_checkpoint"]).name
    record = _eval(tmp_path, f"ckpt_path={best}")
    assert record["test"] == trained["test"]


def test_a_moved_run_folder_still_finds_its_best_checkpoint(run_dir, tmp_path):
    moved = tmp_path / "moved_run"
    shutil.copytree(run_dir, moved)
    record = _eval(tmp_path, f"ckpt_path={moved}")
    assert record["ckpt_path"].startswith(str(moved.resolve()))
    assert record["test"] == read_metrics(run_dir)["test"]


def test_mc_dropout_adds_its_metrics_close_to_the_deterministic_ones(run_dir, tmp_path):
    trained = read_metrics(run_dir)["test"]
    record = _eval(tmp_path, f"ckpt_path={run_dir}", "dropout=mc", "dropout.samples=7")
    test = record["test"]
    assert record["mc_samples"] == 7
    for name, value in trained.items():  # the deterministic metrics do not change
        assert _same(test[name], value), name
    assert set(MC_METRICS) <= set(test)
    # model.dropout=0.1: averaging 7 masks lands near the deterministic net.
    assert abs(test["test/mc_acc"] - test["test/acc"]) < 0.05
    assert 0 < test["test/mc_entropy"] <= math.log(10)
    assert test["test/mc_spread"] > 0  # the passes did differ
    again = _eval(tmp_path / "again", f"ckpt_path={run_dir}", "dropout=mc", "dropout.samples=7")
    assert again["test"] == test  # seeded with the run's seed: the masks repeat


def test_a_float64_run_is_reproduced_without_rounding_its_weights(tmp_path):
    cwd = tmp_path / "train"
    cwd.mkdir()
    float64 = [*SMALL_RUN, "trainer.max_epochs=2", "optimizer.lr=0.01", "trainer.precision=64-true"]
    assert run_train_in_process(float64, cwd) == 0
    (run,) = (cwd / "outputs" / "runs").glob("*/*")
    record = _eval(tmp_path, f"ckpt_path={run}")
    assert record["test"] == read_metrics(run)["test"]
    saved = checkpoint.read_checkpoint(record["ckpt_path"])
    _, model, _ = prepare(_job(run, tmp_path / "job"), saved)
    tested = model.state_dict()
    for name, weight in saved["state_dict"].items():  # not rounded through float32
        assert weight.dtype == torch.float64 and torch.equal(tested[name], weight), name
    weight = saved["state_dict"]["net.block_1.linear.weight"]
    assert not torch.equal(weight, weight.float().double())  # which float32 would change


def _job(run: Path, output_dir: Path, *overrides: str):
    """The config eval.py tests `run` with, given `overrides` on its command line."""
    given = [f"ckpt_path={run}", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*given, f"paths.output_dir={output_dir}"])
    return eval_config(cfg, load_run_config(run), given)


def test_overrides_apply_on_top_of_the_run_config(run_dir, tmp_path):
    overrides = ["data.batch_size=500", "dropout=mc", "dropout.samples=9"]
    job = _job(run_dir, tmp_path, *overrides)
    assert job.data.batch_size == 500  # the override ...
    assert job.model.width == 16 and job.model.depth == 2  # ... on the run's own model
    assert job.optimizer.lr == 0.01 and job.trainer.max_epochs == 3
    assert job.dropout.samples == 9 and job.dropout._target_.endswith("MCDropout")
    assert job.task_name == "eval" and "regularization" not in job
    assert job.data.shuffle_seed == job.seed == 42  # interpolations resolve in the new config


def test_a_larger_test_batch_changes_nothing_but_rounding(run_dir, tmp_path):
    trained = read_metrics(run_dir)["test"]
    record = _eval(tmp_path, f"ckpt_path={run_dir}", "data.batch_size=1000")
    assert record["test"]["test/acc"] == trained["test/acc"]
    assert math.isclose(record["test"]["test/loss"], trained["test/loss"], rel_tol=1e-5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "ckpt_path: is required"),
        (["ckpt_path=null"], "ckpt_path: is required"),
        (["ckpt_path={tmp}/nowhere"], "ckpt_path: no checkpoint at"),
        (["ckpt_path={tmp}"], "is not a run folder (it has no .hydra/config.yaml)"),
        (["ckpt_path={bad_run}"], "is truncated or damaged"),
        (["ckpt_path={bad_run}/checkpoints/epoch_000.ckpt"], "is truncated or damaged"),
        (["ckpt_path={loose}"], "is not in a run folder"),
        (["ckpt_path={run}", "model.width=32"], "holds a different model"),
        (["ckpt_path={run}", "model=cnn"], "holds a different model"),
        (["ckpt_path={run}", "dropout=constant"], "dropout: eval.py takes dropout=mc"),
        (["ckpt_path={run}", "dropout=mc", "dropout.samples=1"], "dropout.samples: must be"),
    ],
    ids=[
        "missing",
        "null",
        "no-such-path",
        "not-a-run-folder",
        "bad-best-checkpoint",
        "bad-checkpoint-file",
        "outside-a-run",
        "wider-model",
        "other-model",
        "training-dropout",
        "one-mc-sample",
    ],
)
def test_bad_input_exits_2_with_one_line(run_dir, tmp_path, capsys, args, expected):
    bad_run = tmp_path / "bad_run"
    (bad_run / "checkpoints").mkdir(parents=True)
    shutil.copytree(run_dir / ".hydra", bad_run / ".hydra")
    best = next((run_dir / "checkpoints").glob("epoch_*.ckpt")).read_bytes()
    (bad_run / "checkpoints" / "epoch_000.ckpt").write_bytes(best[: len(best) // 2])
    loose = tmp_path / "loose.ckpt"
    loose.write_bytes(best)
    names = {"tmp": tmp_path, "bad_run": bad_run, "loose": loose, "run": run_dir}
    args = [arg.format(**names) for arg in args]
    capsys.readouterr()
    code = run_eval_in_process([*args, f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("reglab: error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and expected in lines[0], err[-2000:]
    assert "Traceback" not in err and "weights_only" not in err
    assert not (tmp_path / "eval" / EVAL_RECORD).exists()


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_python_eval_py_on_a_run_folder(run_dir, tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("PYTEST_CURRENT_TEST", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"ckpt_path={run_dir}", *QUIET_EVAL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (written,) = (tmp_path / "outputs" / "eval").glob(f"*/*/{EVAL_RECORD}")
    record = json.loads(written.read_text())
    trained = read_metrics(run_dir)["test"]
    assert record["test"].keys() == trained.keys()
    assert all(_same(record["test"][k], v) for k, v in trained.items())
    lines = [line for line in done.stdout.splitlines() if line.startswith("reglab: ")]
    assert len(lines) == 2 and lines[0].startswith("reglab: testing ")
    assert lines[1].endswith(f"outputs in {written.parent}")
    assert (written.parent / ".hydra" / "config.yaml").is_file()  # the eval's own config
