"""Optuna search: pruning of hopeless trials, a resumable study, best.yaml."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml

from conftest import run_train_py

ARGS = [
    "hparams_search=penalty_search",
    "hparams_search.n_trials=6",
    "hparams_search.sampler=random",
    # Learning rates down to 1e-8 make some trials hopeless: the pruner must stop them.
    "hparams_search.params={optimizer.lr: {type: float, low: 1.0e-8, high: 1.0e-2, log: true}}",
    "trainer.max_epochs=4",
    "early_stopping=none",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


@pytest.mark.slow  # about 20 s or more; CI runs the slow tests
def test_search_prunes_hopeless_trials_and_continues_the_study(tmp_path):
    first = run_train_py(ARGS, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # A line per trial (Optuna's), then the summary; each trial's own lines go to train.log.
    console = (first.stdout + first.stderr).splitlines()
    trials = [line for line in console if line.startswith("Trial ")]
    assert len(trials) == 6 and all("finished" in t or "pruned" in t for t in trials)
    assert len(console) <= 6 + 4, console
    assert not [line for line in console if "epochs in" in line or "eval mode ok" in line]
    (log,) = (tmp_path / "outputs" / "runs").rglob("train.log")  # the search command's
    text = log.read_text()
    assert all(t in text for t in trials) and text.count("reglab: eval mode ok") == 6
    folder = tmp_path / "outputs" / "search" / "penalty_search"
    storage = f"sqlite:///{folder / 'study.db'}"
    study = optuna.load_study(study_name="penalty_search", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 6
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1
    assert states.count(optuna.trial.TrialState.FAIL) == 0
    pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    record = json.loads((folder / f"trial_{pruned[0]:04d}" / "metrics.json").read_text())
    assert record["status"] == "pruned"

    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["best_value"] == study.best_value
    assert set(best["best_params"]) >= {"optimizer.lr", "regularization.strength"}
    done = json.loads((folder / f"trial_{best['best_trial']:04d}" / "metrics.json").read_text())
    assert done["status"] == "ok" and done["objective"] == best["best_value"]

    from reglab.report.cli import build_report

    written = {p.name for p in build_report(folder)}
    assert {"report.md", "report_optuna_history.png", "report_optuna_importances.png"} <= written
    rows = (folder / "report.csv").read_text()
    assert rows.count("\n") == 7  # header + one row per trial (each trial is its own config)

    # The spelling, with -m, continues the same study; its one job points at the study.
    second = run_train_py(["-m", *ARGS], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(optuna.load_study(study_name="penalty_search", storage=storage).trials) == 12
    (pointer,) = (tmp_path / "outputs" / "multirun").rglob("metrics.json")
    record = json.loads(pointer.read_text())
    assert record["status"] == "ok" and record["search_folder"] == str(folder.resolve())
    assert "reglab sweep: 1 ok, 0 failed" in second.stdout
