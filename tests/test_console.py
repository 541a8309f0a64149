"""The console of a run is short (header, one line per epoch, the result); the run folder keeps
the rest: train.log (everything, Lightning's notices included), config_tree.txt, model_summary.txt."""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import pytest
import tomllib
from omegaconf import OmegaConf

from conftest import ROOT, compose_config, run_records, run_train_py
from reglab.callbacks import WeightPenalty
from reglab.callbacks.epoch_lines import makes_zeros
from reglab.evaluate import _trainer
from reglab.run import train
from reglab.sweep import SweepSummary

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
    assert "reglab sweep: 4 ok, 0 failed" in lines[-2]
    (sweep_dir,) = {p.parents[1] for p in (tmp_path / "outputs").rglob("metrics.json")}
    # Hydra's log prefix in front; the folder as the sweep line names it (relative to the cwd).
    report = f"reglab sweep: report: reglab-report {sweep_dir.relative_to(tmp_path)}"
    assert lines[-1].endswith(report)
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


# --- what a run says at its end ------------------------------------------------------------------
TINY = ["model=mlp", "model.width=16", "logger=none", "trainer.enable_progress_bar=true"]


def _reglab_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reglab"]


@pytest.mark.slow  # a short training or two
def test_early_stopping_says_why_and_when_it_stopped(tmp_path, caplog):
    # min_delta 100: no epoch after the first counts as an improvement; patience 1 stops at 2.
    caplog.set_level(logging.INFO, logger="reglab")
    overrides = [*TINY, "early_stopping.min_delta=100", "early_stopping.patience=1"]
    train(compose_config([*overrides, "trainer.max_epochs=10"], tmp_path / "run"))
    lines = _reglab_lines(caplog)
    (stop,) = [line for line in lines if "early stopping" in line]
    assert stop.startswith(
        "reglab: early stopping at epoch 2 of 10: val/loss did not improve by more than 100 "
        "for 1 epoch; best epoch "
    ), stop
    assert lines.index(stop) == len(lines) - 2  # just before the result line


def test_fast_dev_run_prints_its_result_and_no_folder(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reglab")
    run_dir = tmp_path / "run"
    train(compose_config([*TINY, "debug=fdr"], run_dir))
    lines = _reglab_lines(caplog)
    assert not [line for line in lines if str(run_dir) in line or "run folder" in line], lines
    result = lines[-1]
    assert re.fullmatch(
        r"reglab: fast_dev_run ok: 1 batch of train, val and test \(train/loss=\d+\.\d{4}, "
        r"val/loss=\d+\.\d{4}, test/loss=\d+\.\d{4}\); nothing kept",
        result,
    ), result


@pytest.mark.parametrize(
    ("regularization", "shown"),
    [
        (["regularization=none"], False),
        (["regularization=l2"], False),
        (["regularization=elastic_net", "regularization.l1_ratio=0"], False),
        (["regularization=elastic_net", "regularization.l1_ratio=0.5"], True),
        (["regularization=l1"], True),
        (["regularization=l1", "regularization.method=proximal"], True),
        (["regularization=l1", "regularization.strength=0"], False),
    ],
)
def test_zero_fraction_is_shown_only_where_an_l1_part_acts(tmp_path, regularization, shown):
    cfg = compose_config([*TINY, *regularization], tmp_path / "run")
    node = OmegaConf.to_container(cfg.regularization)
    penalty = (
        WeightPenalty(**{k: v for k, v in node.items() if k != "_target_"})
        if ("_target_" in node)
        else WeightPenalty.baseline()
    )  # what reglab.run adds for regularization=none

    class Trainer:
        callbacks = [penalty]

    assert makes_zeros(Trainer()) is shown


@pytest.mark.slow  # a short training or two
def test_a_run_without_l1_prints_no_zero_fraction(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reglab")
    train(compose_config([*TINY, "trainer.max_epochs=1"], tmp_path / "none"))
    train(compose_config([*TINY, "trainer.max_epochs=1", "regularization=l1"], tmp_path / "l1"))
    epochs = [line for line in _reglab_lines(caplog) if line.startswith("epoch 1/1 ")]
    assert len(epochs) == 2
    assert "reg/zero_fraction" not in epochs[0] and "reg/zero_fraction 0." in epochs[1]


def test_eval_shows_no_progress_bar_off_a_terminal(tmp_path):
    # pytest captures stdout: not a terminal, as a log file or a batch job's output.
    job = compose_config(["trainer.enable_progress_bar=true"], tmp_path / "eval")
    assert _trainer(job, []).progress_bar_callback is None


def test_a_sweep_summary_points_at_the_report_command(tmp_path, caplog):
    sweep_dir = tmp_path / "multirun" / "sweep"
    for number, status in enumerate(["ok", "failed"]):
        job = sweep_dir / str(number)
        (job / ".hydra").mkdir(parents=True)
        (job / "metrics.json").write_text(f'{{"status": "{status}", "error": "boom"}}')
    caplog.set_level(logging.INFO, logger="reglab")
    summary = SweepSummary()
    summary.started = 0.0
    summary.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    line = _reglab_lines(caplog)[-1]
    assert line == f"reglab sweep: report: reglab-report {sweep_dir}"
    # The command is the package's own script, taking the sweep folder as its one argument.
    command = shlex.split(line.removeprefix("reglab sweep: report: "))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[command[0]] == "reglab.report.cli:main"
    assert [Path(arg) for arg in command[1:]] == [sweep_dir]
