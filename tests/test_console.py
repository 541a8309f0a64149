"""The console of a run is short (header, one line per epoch, the result); the run folder keeps
the rest: train.log (everything, Lightning's notices included), config_tree.txt, model_summary.txt."""

from __future__ import annotations

import re

import pytest

from conftest import run_records, run_train_py

NOISE = ("Tip:", "litlogger", "LeafSpec", "does not have many workers", "GPU available")


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_a_run_prints_a_header_one_line_per_epoch_and_the_result(tmp_path):
    result = run_train_py(
        ["model=selu_net", "trainer.max_epochs=4", "early_stopping=none"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 12, lines
    assert not [line for line in lines if any(noise in line for noise in NOISE)]
    assert (
        lines[0].startswith("reglab: selu_net (") and "on digits (1077 train / 360 val" in lines[0]
    )
    epochs = [line for line in lines if re.match(r"epoch \d+/4 ", line)]
    assert [line.split()[1] for line in epochs] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("train/loss" in line and "val/acc" in line for line in epochs)
    assert "reglab: eval mode ok: 2 dropout, 0 batchnorm" in lines
    assert lines[-1].startswith("reglab: 4 epochs in ")

    (run_dir,) = [p.parent for p in (tmp_path / "outputs").rglob("metrics.json")]
    log = (run_dir / "train.log").read_text()
    for line in epochs + [lines[0], lines[-1]]:  # what the console showed, and more
        assert line in log
    assert "GPU available" in log and "mode audit (training): (root)=train" in log
    assert "Tip:" not in log
    assert "_target_: torch.optim.Adam" in (run_dir / "config_tree.txt").read_text()
    assert "Trainable params" in (run_dir / "model_summary.txt").read_text()


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_print_config_true_prints_the_tree(tmp_path):
    result = run_train_py(["print_config=true", "debug=fdr"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "optimizer" in result.stdout and "_target_: torch.optim.Adam" in result.stdout


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_a_sweep_prints_a_few_lines_per_job_and_the_summary(tmp_path, launcher):
    # joblib's workers import Lightning before Hydra configures their logging: Lightning then
    # gives its loggers console handlers of their own, which must not reach the console.
    args = [
        "-m",
        *launcher,
        "model=mlp",
        "model.width=16",
        "trainer.max_epochs=2",
        "seed=1,2,3,4",
        "logger=none",
    ]
    result = run_train_py(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= 4 * 5 + 2, lines
    assert not [line for line in lines if any(noise in line for noise in NOISE)]
    jobs = [line for line in lines if line.startswith("reglab: job ")]
    assert len(jobs) == 4 and all(": ok, best/val/loss=" in line for line in jobs)
    assert "reglab sweep: 4 ok, 0 failed" in lines[-1]
    assert len(run_records(tmp_path)) == 4
    assert not [line for line in lines if "eval mode ok" in line or "run folder" in line]
    logs = [log.read_text() for log in (tmp_path / "outputs").rglob("train.log")]
    assert len(logs) == 4
    for log in logs:  # each job's header, audit line and Lightning's notices: its log only
        assert "reglab: mlp (" in log and "reglab: eval mode ok: " in log
        assert "GPU available" in log and "Tip:" not in log


def test_a_sweep_experiment_without_multirun_says_how_to_run_it(tmp_path):
    result = run_train_py(["experiment=ablation_penalty"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "reglab: error: experiment: this experiment is a sweep over regularization, "
        "regularization.strength, seed: run it with -m: "
        "python train.py -m experiment=ablation_penalty"
    )
    assert not run_records(tmp_path)
