"""Optuna search robustness: a continued study draws new parameters, stale RUNNING trials are
failed, a study refuses another fixed config, a bad space or metric fails before any trial, and a
search whose trials all failed exits non-zero.

Trials run a stand-in for `run_one` (the study machinery is under test, not training); the checks
before the first trial compose and build the real config.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from conftest import run_train_in_process
from reglab import search
from search_support import SEARCH, folder_of, load, study_with_a_killed_trial

RUNNING, FAIL, COMPLETE, WAITING = (
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.WAITING,
)


def params_of(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_continuing_a_study_draws_new_parameters(tmp_path, trials):
    assert run_train_in_process(SEARCH, tmp_path) == 0
    assert run_train_in_process(SEARCH, tmp_path) == 0
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [COMPLETE] * 4
    assert len(set(params_of(study))) == 4  # a sampler seeded alike again re-drew trials 0 and 1
    # Each trial ran with the values drawn for it.
    assert [float(c.optimizer.lr) for c in trials] == [
        t.params["optimizer.lr"] for t in study.trials
    ]


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_a_killed_trial_left_running_is_failed_at_the_next_start(tmp_path, trials):
    study, killed = study_with_a_killed_trial(tmp_path)
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=1"], tmp_path) == 0
    states = {t.number: t.state for t in load(tmp_path).trials}
    assert states == {killed.number: FAIL, 1: COMPLETE}


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_shared_storage_fails_dead_workers_trials_and_keeps_live_ones(tmp_path, trials):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="penalty_search", storage=storage)
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(exited.stdout)
    host = socket.gethostname()
    silent = study.ask()  # its worker stopped sending heartbeats
    storage.record_heartbeat(silent._trial_id)
    gone = study.ask()  # its worker process on this machine no longer exists
    gone.set_user_attr(search.WORKER_ATTR, {"host": host, "pid": dead_pid})
    live = study.ask()  # another worker on this machine, still running
    live.set_user_attr(search.WORKER_ATTR, {"host": host, "pid": os.getpid()})
    elsewhere = study.ask()  # a worker on another machine without heartbeats: cannot tell
    elsewhere.set_user_attr(search.WORKER_ATTR, {"host": "other-host", "pid": dead_pid})
    time.sleep(2.5)  # past the grace period of `silent`'s heartbeat

    args = [*SEARCH, "hparams_search.n_trials=1", f"hparams_search.storage={url}"]
    assert run_train_in_process([*args, "hparams_search.grace_period=1"], tmp_path) == 0
    trials = load(tmp_path, url).trials
    states = {t.number: t.state for t in trials}
    # Each failed trial is retried once: trial 4 ran silent's parameters, 5 (gone's) waits.
    assert states == {
        silent.number: FAIL,
        gone.number: FAIL,
        live.number: RUNNING,
        elsewhere.number: RUNNING,
        4: COMPLETE,
        5: WAITING,
    }
    assert [trials[n].system_attrs["failed_trial"] for n in (4, 5)] == [silent.number, gone.number]


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_a_study_refuses_another_fixed_config(tmp_path, trials, capsys):
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=1"], tmp_path) == 0
    # Seed, n_trials and output-only keys are not part of the experiment.
    same = [*SEARCH, "hparams_search.n_trials=1", "seed=7", "print_config=true"]
    assert run_train_in_process(same, tmp_path) == 0
    capsys.readouterr()
    other = [*SEARCH, "hparams_search.n_trials=1", "trainer.max_epochs=2"]
    assert run_train_in_process(other, tmp_path) == 2
    error = capsys.readouterr().err
    assert "reglab: error: hparams_search.study_name:" in error
    assert "trainer.max_epochs: 1 -> 2" in error and "another study_name" in error
    assert len(load(tmp_path).trials) == 2  # refused before any trial


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_a_study_refuses_another_direction(tmp_path, trials, capsys):
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=1"], tmp_path) == 0
    flipped = [*SEARCH, "hparams_search.direction=maximize", "optimized_metric=best/val/acc"]
    assert run_train_in_process(flipped, tmp_path) == 2
    assert "hparams_search.direction:" in capsys.readouterr().err


P = "hparams_search.params"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (f"++{P}={{optimizer.lr: {{type: bogus}}}}", f"{P}.optimizer.lr.type"),
        (f"++{P}={{optimizer.lr: {{low: 0.1, high: 0.01, log: false}}}}", f"{P}.optimizer.lr.low"),
        (f"++{P}={{model.dropout: {{low: 0.0, high: 0.5, log: true}}}}", f"{P}.model.dropout.low"),
        (f"++{P}={{optimizer.lr: {{high: abc}}}}", f"{P}.optimizer.lr.high"),
        (f"++{P}={{optimizer.lr: {{log: maybe}}}}", f"{P}.optimizer.lr.log"),
        (f"++{P}={{optimizer.lr: {{hihg: 0.1}}}}", f"{P}.optimizer.lr.hihg"),
        (f"++{P}={{regularization.method: {{choices: []}}}}", f"{P}.regularization.method.choices"),
        (
            f"++{P}={{regularization.method: {{choices: [[1, 2]]}}}}",
            f"{P}.regularization.method.choices[0]",
        ),
        (
            f"++{P}={{trainer.max_epochs: {{type: int, low: 1.5, high: 3}}}}",
            f"{P}.trainer.max_epochs.low",
        ),
        (f"++{P}={{optimizer.lrr: {{type: float, low: 0.1, high: 1.0}}}}", f"{P}.optimizer.lrr"),
        (f"++{P}={{optimizer.lr: 0.1}}", f"{P}.optimizer.lr"),
        (f"{P}=null", P),
        # The space's first value is a value the run refuses: found before the first trial too.
        (f"++{P}={{model.dropout: {{low: -0.5, high: 0.5}}}}", "model.dropout"),
        ("optimized_metric=bogus", "optimized_metric"),
        ("optimized_metric=best/val/bogus", "optimized_metric"),
        ("optimized_metric=test/loss/extra", "optimized_metric"),
        ("optimized_metric=null", "optimized_metric"),
        ("hparams_search.sampler=bogus", "hparams_search.sampler"),
        ("hparams_search.pruner=bogus", "hparams_search.pruner"),
        ("hparams_search.direction=up", "hparams_search.direction"),
        ("hparams_search.n_trials=0", "hparams_search.n_trials"),
        ("hparams_search.n_trials=null", "hparams_search.n_trials"),
        ("hparams_search.total_trials=0", "hparams_search.total_trials"),
        ("hparams_search.heartbeat_interval=0", "hparams_search.heartbeat_interval"),
        ("hparams_search.storage=notadb://x", "hparams_search.storage"),
    ],
)
def test_a_bad_space_or_metric_fails_before_the_first_trial(
    tmp_path, trials, capsys, override, key
):
    assert run_train_in_process([*SEARCH, override], tmp_path) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"reglab: error: {key}:"), error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert trials == []
    assert not (folder_of(tmp_path) / "study.db").exists()


@pytest.mark.parametrize(
    "metric", ["best/val/acc", "final/train/loss", "final/val/f1", "test/acc", "best/val/loss"]
)
def test_metrics_the_task_logs_are_accepted(tmp_path, trials, metric):
    direction = "maximize" if metric.endswith(("acc", "f1")) else "minimize"
    args = [*SEARCH, f"optimized_metric={metric}", f"hparams_search.direction={direction}"]
    assert run_train_in_process([*args, "hparams_search.n_trials=1"], tmp_path) == 0


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_no_completed_trial_exits_1_without_best_yaml(tmp_path, monkeypatch, capsys):
    def failing_run_one(cfg, extra_callbacks=None, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr("reglab.run.run_one", failing_run_one)
    assert run_train_in_process(SEARCH, tmp_path) == 1
    assert "reglab: error: no trial of the study completed" in capsys.readouterr().err
    folder = folder_of(tmp_path)
    assert not (folder / "best.yaml").exists()
    assert [t.state for t in load(tmp_path).trials] == [FAIL, FAIL]
    record = json.loads((folder / "trial_0000" / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: boom"


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_a_command_whose_trials_all_fail_exits_1_and_keeps_the_best(tmp_path, trials, monkeypatch):
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=1"], tmp_path) == 0
    best = yaml.safe_load((folder_of(tmp_path) / "best.yaml").read_text())

    def failing_run_one(cfg, extra_callbacks=None, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr("reglab.run.run_one", failing_run_one)
    assert run_train_in_process(SEARCH, tmp_path) == 1
    assert yaml.safe_load((folder_of(tmp_path) / "best.yaml").read_text()) == {
        **best,
        "trials": {**best["trials"], "fail": 2},
    }


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_a_multirun_search_without_completed_trial_fails_its_job(tmp_path, monkeypatch):
    def failing_run_one(cfg, extra_callbacks=None, **_):
        raise RuntimeError("boom")

    monkeypatch.setattr("reglab.run.run_one", failing_run_one)
    assert run_train_in_process(["-m", *SEARCH], tmp_path) == 1
    (job,) = (tmp_path / "outputs" / "multirun").rglob("metrics.json")
    record = json.loads(job.read_text())
    assert record["status"] == "failed" and "no trial of the study completed" in record["error"]


def _interrupt_the_second_trial(monkeypatch, how: str) -> list[float]:
    """Trials end at once with objective = lr; the second is stopped as `how` says."""
    import signal

    from reglab.errors import RunInterrupted

    lrs: list[float] = []

    def fake_run_one(cfg, extra_callbacks=None, **_):
        lrs.append(float(cfg.optimizer.lr))
        if len(lrs) != 2:
            return lrs[-1]
        if how == "sigterm":  # outside Lightning: the worker's own handler stops the trial
            # (never the default action here: it would end the test process)
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            raise AssertionError("SIGTERM did not stop the trial")
        if how == "fit":  # what SIGTERM or Ctrl-C during Lightning's fit gives
            raise RunInterrupted("interrupted at epoch 3; resume with ckpt_path=x")
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        raise SIGTERMException  # Lightning's, on SIGTERM while it tests

    monkeypatch.setattr("reglab.run.run_one", fake_run_one)
    return lrs


@pytest.mark.slow  # two searches in-process, about 10 s; CI runs the slow tests
@pytest.mark.parametrize("how", ["sigterm", "fit", "lightning_test"])
def test_a_stopped_worker_fails_its_trial_exits_nonzero_and_the_trial_runs_again(
    tmp_path, monkeypatch, capsys, how
):
    lrs = _interrupt_the_second_trial(monkeypatch, how)
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=3"], tmp_path) == 130
    why = {"sigterm": "stopped by SIGTERM", "fit": "stopped by Ctrl-C at epoch 3"}
    why["lightning_test"] = why["sigterm"]
    assert f"reglab: search stopped in trial 1 ({why[how]}): " in capsys.readouterr().err
    study = load(tmp_path)
    trials = study.get_trials()
    assert [t.state for t in trials] == [COMPLETE, FAIL, WAITING]  # none RUNNING, no trial 2 run
    assert trials[1].user_attrs.get("interrupted") is True
    assert (
        json.loads((folder_of(tmp_path) / "trial_0001" / "metrics.json").read_text())["status"]
        == "interrupted"
    )
    # Run again, the interrupted trial's parameters run first (a retry, not interrupted itself).
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=1"], tmp_path) == 0
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [COMPLETE, FAIL, COMPLETE]
    assert lrs[2] == lrs[1] == trials[1].params["optimizer.lr"]
    assert "interrupted" not in trials[2].user_attrs


@pytest.mark.slow  # a worker subprocess trains until it is stopped; CI runs the slow tests
def test_a_worker_sigtermed_while_training_leaves_its_trial_failed_not_running(tmp_path):
    import signal

    from conftest import start_train_py

    args = [*SEARCH, "hparams_search.n_trials=1", "trainer.max_epochs=1000"]
    worker = start_train_py(args, tmp_path)
    trial_dir = folder_of(tmp_path) / "trial_0000"
    deadline = time.monotonic() + 180
    while not list(trial_dir.glob("checkpoints/*.ckpt")):  # an epoch done: Lightning is fitting
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "the trial did not start training"
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 130, stderr[-3000:]
    assert "reglab: search stopped in trial 0 (stopped by SIGTERM at epoch " in stderr
    assert "Traceback" not in stderr
    (trial,) = load(tmp_path).get_trials(states=[FAIL])
    assert trial.user_attrs.get("interrupted") is True
    assert not load(tmp_path).get_trials(states=[RUNNING])
    assert json.loads((trial_dir / "metrics.json").read_text())["status"] == "interrupted"
