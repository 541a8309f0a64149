"""Optuna workers sharing one study on a real PostgreSQL server (a throwaway one on loopback).

Workers are real `python train.py hparams_search=penalty_search hparams_search.storage=URL`
processes, the same command each, started together on a new database: they create the study once,
draw distinct parameters, prune on each other's results and leave one best.yaml; a worker killed
mid-trial leaves a trial that the next worker fails and retries.

The server is scripts/postgres.py's throwaway one, one per test process, with a new database per
test. The tests are skipped, with the reason, only where no server can be started at all (no
PostgreSQL binaries, root without a `postgres` user, no psycopg driver); under CI (env CI=true)
they fail instead, so a CI machine without PostgreSQL cannot pass by skipping them. A server that
can be started but fails to start is an error.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import optuna
import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, run_train_py
from reglab.report.cli import build_report
from reglab.search import WORKER_ATTR, storage


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "reglab_postgres", ROOT / "scripts" / "postgres.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


postgres = _load_script()


def cannot_start(reason: str) -> None:
    """Skip the test, or fail it under CI."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs PostgreSQL for this test: {reason}")
    pytest.skip(f"no PostgreSQL server can be started here: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One server per test process, stopped (and its data deleted) at the end of the session."""
    reason = postgres.unavailable()
    if reason:
        cannot_start(reason)
    if importlib.util.find_spec("psycopg") is None:
        cannot_start('the psycopg driver is not installed: pip install -e ".[postgres]"')
    with postgres.throwaway_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """`postgresql://...` of a new, empty database: a fresh study storage for one test."""
    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:12]}")


def sqlalchemy_url(url: str) -> str:
    """The URL with psycopg 3 named, as reglab opens it (for optuna.load_study in a test)."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


COMPLETE, PRUNED, FAIL, RUNNING, WAITING = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
)
# Tiny trials: a 16-wide MLP, a few batches an epoch.
TINY = [
    "hparams_search=penalty_search",
    "model.width=16",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def start_worker(args: list[str], cwd: Path, output: IO[str] | None = None) -> subprocess.Popen:
    """`python train.py <args>` in the background, one torch thread (workers share the cores).

    Its stdout and stderr go to `output` (both), else to pipes.
    """
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    streams = (
        {"stdout": output, "stderr": subprocess.STDOUT}
        if output
        else {
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
        }
    )
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, text=True, **streams
    )


@functools.cache
def rdb(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per database for the test's own reads."""
    return optuna.storages.RDBStorage(sqlalchemy_url(url))


def load(url: str, name: str = "penalty_search") -> optuna.Study:
    """The study as the database holds it now."""
    return optuna.load_study(study_name=name, storage=rdb(url))


def params_of(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


def test_workers_creating_one_study_at_the_same_instant_all_get_it(postgres_url):
    # Four workers open a new database at once: Optuna's tables and the study are created once.
    spec = OmegaConf.create(
        {"storage": postgres_url, "study_name": "race", "direction": "minimize"}
    )
    barrier, studies, errors = threading.Barrier(4), [], []

    def worker() -> None:
        barrier.wait()
        try:
            studies.append(storage.open_study(spec, Path("."), None, lambda study: None)[0])
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(studies) == 4
    summaries = optuna.get_all_study_summaries(rdb(postgres_url))
    assert [s.study_name for s in summaries] == ["race"]
    assert len({study._study_id for study in studies}) == 1


@pytest.mark.slow  # three worker processes, about 30 s on 2 cores; CI runs the slow tests
def test_three_workers_started_together_share_one_study(tmp_path, postgres_url):
    args = [*TINY, "hparams_search.n_trials=4", f"hparams_search.storage={postgres_url}"]
    workers = [start_worker([*args, f"hparams_search.worker={i}"], tmp_path) for i in range(3)]
    done = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, done, strict=True):
        assert worker.returncode == 0, err[-3000:]

    study = load(postgres_url)
    trials = study.trials
    assert len(trials) == 12
    assert all(t.state in (COMPLETE, PRUNED) for t in trials), [t.state for t in trials]
    assert len({params_of(t) for t in trials}) == 12  # no two workers drew the same parameters
    labels = {t.user_attrs[WORKER_ATTR]["worker"] for t in trials}
    pids = {t.user_attrs[WORKER_ATTR]["pid"] for t in trials}
    assert labels == {0, 1, 2} and pids == {w.pid for w in workers}

    folder = tmp_path / "outputs" / "search" / "penalty_search"
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["best_value"] == study.best_value
    assert best["best_params"] == study.best_params
    assert best["best_trial"] == study.best_trial.number
    assert best["trials"]["complete"] + best["trials"]["pruned"] == 12
    assert best["storage"] == sqlalchemy_url(postgres_url)  # where the report finds the study
    assert len(list(folder.glob("trial_*/metrics.json"))) == 12
    # The report reads the shared study from the storage best.yaml records.
    assert "report_optuna_history.png" in {p.name for p in build_report(folder)}


@pytest.mark.slow  # two worker processes one after the other; CI runs the slow tests
def test_pruning_sees_the_trials_of_other_workers(tmp_path, postgres_url):
    def space(lr: float) -> str:
        return f"hparams_search.params={{optimizer.lr: {{type: float, low: {lr}, high: {lr}}}}}"

    shared = [
        *TINY,
        "trainer.max_epochs=4",
        "early_stopping=none",
        "regularization=none",  # trials differ in lr (and dropout) only
        "hparams_search.pruner=median",  # prunes once 2 trials completed, from epoch 1
        f"hparams_search.storage={postgres_url}",
    ]
    first = run_train_py([*shared, "hparams_search.n_trials=2", space(1.0e-2)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # Another worker, whose own process has no trial to compare with: a hopeless learning rate.
    second = run_train_py([*shared, "hparams_search.n_trials=1", space(1.0e-8)], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [t.state for t in load(postgres_url).trials] == [COMPLETE, COMPLETE, PRUNED]


@pytest.mark.slow  # a worker killed mid-trial and another one; CI runs the slow tests
def test_a_worker_killed_mid_trial_leaves_a_trial_the_next_worker_fails_and_retries(
    tmp_path, postgres_url
):
    args = [
        *TINY,
        "trainer.max_epochs=20",  # long enough to be killed in the middle
        "early_stopping=none",
        "hparams_search.pruner=none",
        "hparams_search.n_trials=null",
        "hparams_search.total_trials=3",  # the study's budget, all workers together
        "hparams_search.heartbeat_interval=1",
        "hparams_search.grace_period=2",
        f"hparams_search.storage={postgres_url}",
    ]
    log = tmp_path / "doomed.log"
    with log.open("w") as output:  # the doomed worker's messages, readable while it runs
        doomed = start_worker(args, tmp_path, output=output)
    deadline, killed = time.monotonic() + 300, None
    while killed is None and time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(0.2)
        said = log.read_text()  # Optuna logs the study it created or loaded; reading before
        if "A new study created" not in said and "Using an existing study" not in said:
            continue  # would race the worker creating Optuna's tables
        running = load(postgres_url).get_trials(states=[RUNNING])
        killed = next((t for t in running if t.intermediate_values), None)  # after an epoch
    assert killed is not None, log.read_text()[-3000:]
    doomed.send_signal(signal.SIGKILL)
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    assert load(postgres_url).trials[killed.number].state == RUNNING  # nobody failed it yet

    after = run_train_py(args, tmp_path)
    assert after.returncode == 0, after.stderr[-3000:]
    trials = load(postgres_url).trials
    assert trials[killed.number].state == FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == COMPLETE and retry.params == killed.params
    assert retry.user_attrs[WORKER_ATTR]["pid"] != doomed.pid
    assert not [t for t in trials if t.state in (RUNNING, WAITING)]
    # The budget counts the retry instead of the killed trial: 3 trials with a result.
    assert [t.state for t in trials if t.number != killed.number] == [COMPLETE] * 3
    stale = tmp_path / "outputs" / "search" / "penalty_search" / f"trial_{killed.number:04d}"
    assert "stale" in json.loads((stale / "metrics.json").read_text())["error"]
