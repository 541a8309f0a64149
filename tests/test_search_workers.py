"""Several Optuna workers without a server: the default SQLite file takes one worker (a second is
refused with one line), trials are seeded by their number (workers draw different parameters), a
study-wide trial budget, a retried trial, and what a postgresql:// URL needs installed.

In-process trials run a stand-in for `run_one` (the study machinery is under test); the two-worker
test starts real `python train.py` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import ROOT, run_train_in_process
from reglab import search
from reglab.search import storage
from reglab.search.sampling import PerTrialSeed
from search_support import SEARCH, folder_of, load, study_with_a_killed_trial

COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def test_a_second_worker_on_the_default_sqlite_file_is_refused_with_one_line(
    tmp_path, trials, capsys
):
    folder = folder_of(tmp_path)
    folder.mkdir(parents=True)
    with storage.one_local_worker(folder, "penalty_search"):  # a worker holds the study
        assert run_train_in_process(SEARCH, tmp_path) == 2
    error = capsys.readouterr().err
    assert error.startswith("reglab: error: hparams_search.storage: study 'penalty_search'")
    assert "a PostgreSQL URL" in error and f"pid {os.getpid()}" in error
    assert error.count("\n") == 1 and "Traceback" not in error
    assert trials == []
    assert run_train_in_process(SEARCH, tmp_path) == 0  # the lock went with its worker
    assert len(trials) == 2


@pytest.mark.slow  # two worker processes; CI runs the slow tests
def test_two_workers_started_together_on_the_default_sqlite_file(tmp_path):
    args = [
        *SEARCH,
        "hparams_search.n_trials=4",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    command = [sys.executable, str(ROOT / "train.py"), *args]
    workers = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [worker.communicate(timeout=600)[1] for worker in workers]
    codes = [worker.returncode for worker in workers]
    assert sorted(codes) == [0, 2], errors
    refused = errors[codes.index(2)]
    lines = [line for line in refused.splitlines() if line.startswith("reglab: error:")]
    assert len(lines) == 1 and "Traceback" not in refused, refused
    assert lines[0].startswith("reglab: error: hparams_search.storage: study 'penalty_search'")
    assert "serves one worker at a time" in lines[0] and "PostgreSQL URL" in lines[0]
    assert [t.state for t in load(tmp_path).trials] == [COMPLETE] * 4


def draws(workers: list[int], sampler: str = "random") -> dict[int, float]:
    """Trial number -> drawn value, for trials asked by the given workers in turn on one study."""
    study = optuna.create_study()
    samplers = [PerTrialSeed(search.SAMPLERS.get(sampler), seed=0) for _ in set(workers)]
    values = {}
    for worker in workers:
        study.sampler = samplers[worker]
        trial = study.ask()
        values[trial.number] = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, values[trial.number])
    return values


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_trial_draws_by_its_number_whichever_worker_runs_it(sampler):
    alone = draws([0, 0, 0, 0], sampler)
    assert draws([0, 1, 1, 0], sampler) == alone  # two workers with the same seed, interleaved
    assert len(set(alone.values())) == 4  # workers seeded alike draw different values


@pytest.mark.slow  # three searches in a row; CI runs the slow tests
def test_total_trials_is_the_budget_of_the_whole_study(tmp_path, trials, capsys):
    budget = [*SEARCH, "hparams_search.n_trials=null", "hparams_search.total_trials=3"]
    assert run_train_in_process(budget, tmp_path) == 0
    assert len(load(tmp_path).trials) == 3
    assert run_train_in_process(budget, tmp_path) == 0  # the budget is spent: no trial
    assert len(load(tmp_path).trials) == 3
    assert "holds 3 trials of its total_trials=3: no trial to run" in capsys.readouterr().out
    # n_trials still caps one worker's share of a larger budget.
    more = [*SEARCH, "hparams_search.n_trials=1", "hparams_search.total_trials=10"]
    assert run_train_in_process(more, tmp_path) == 0
    assert len(load(tmp_path).trials) == 4


@pytest.mark.parametrize("total", [1, 3])
def test_a_worker_stops_when_the_study_holds_its_total_not_one_trial_later(total):
    study = optuna.create_study()  # in memory: the budget callback alone, no training
    study.optimize(lambda trial: 0.0, n_trials=total + 5, callbacks=[storage.stop_at(total)])
    assert len(study.trials) == total


def test_a_retried_failed_trial_does_not_count_against_the_total():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=FAIL))  # trial 0, retried as trial 1
    retry = optuna.trial.create_trial(value=0.0, system_attrs={"retry_history": [0]})
    study.add_trial(retry)
    assert storage.counted_trials(study) == 1
    study.optimize(lambda trial: 0.0, n_trials=10, callbacks=[storage.stop_at(3)])
    assert len(study.trials) == 4  # the failed trial, its retry and two new ones


def test_a_killed_trial_is_retried_once_with_its_parameters(tmp_path, trials):
    study, killed = study_with_a_killed_trial(tmp_path)
    lr = killed.suggest_float("optimizer.lr", 1.0e-4, 1.0e-2, log=True)
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=1"], tmp_path) == 0
    failed, retry = load(tmp_path).trials
    assert failed.state == FAIL and retry.state == COMPLETE
    assert retry.system_attrs["failed_trial"] == killed.number
    assert retry.params["optimizer.lr"] == lr and float(trials[0].optimizer.lr) == lr
    # The retry counts against a study budget instead of the failed trial.
    assert storage.counted_trials(load(tmp_path)) == 1


def test_without_the_postgres_driver_one_line_says_what_to_install(
    tmp_path, trials, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails as if missing
    url = "hparams_search.storage=postgresql://reglab@127.0.0.1:1/reglab"
    assert run_train_in_process([*SEARCH, url], tmp_path) == 2
    assert capsys.readouterr().err == (
        "reglab: error: hparams_search.storage: a postgresql:// URL needs the psycopg driver: "
        'pip install -e ".[postgres]" (or pip install "psycopg[binary]")\n'
    )
    assert trials == []


def test_a_postgres_server_that_does_not_answer_is_one_line(tmp_path, trials, capsys):
    pytest.importorskip("psycopg")
    url = "hparams_search.storage=postgresql://reglab@127.0.0.1:1/reglab"
    assert run_train_in_process([*SEARCH, url], tmp_path) == 2
    error = capsys.readouterr().err
    assert error.startswith("reglab: error: hparams_search.storage: OperationalError:"), error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_storage_urls():
    folder = Path("/data/search")
    spec = {"storage": "postgresql://me:secret@db.example.org:5432/optuna"}
    assert storage.storage_url(spec, folder) == (
        "postgresql+psycopg://me:secret@db.example.org:5432/optuna"
    )
    assert storage.storage_url({"storage": "postgres://me@db/x"}, folder) == (
        "postgresql+psycopg://me@db/x"
    )
    assert storage.storage_url({"storage": "mysql+pymysql://me@db/x"}, folder) == (
        "mysql+pymysql://me@db/x"
    )
    assert storage.storage_url({"storage": None}, folder) == "sqlite:////data/search/study.db"
    shown = storage.shown_url(storage.storage_url(spec, folder))
    assert shown == "postgresql+psycopg://me@db.example.org:5432/optuna"
