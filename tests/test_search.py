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
    # A line per trial (reglab's), then the summary; each trial's own lines go to train.log.
    console = (first.stdout + first.stderr).splitlines()
    trials = [line for line in console if line.startswith("reglab: trial ")]
    assert len(trials) == 6 and all("best/val/loss=" in t or "pruned" in t for t in trials)
    assert not [line for line in console if line.startswith("Trial ")]  # Optuna's own
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


@pytest.mark.slow  # a search of four stand-in trials, about 10 s; CI runs the slow tests
def test_a_search_prints_one_reglab_line_per_trial_naming_the_metric(tmp_path, monkeypatch, capsys):
    import re

    from conftest import run_train_in_process
    from search_support import SEARCH, load

    calls = []

    def fake_run_one(cfg, extra_callbacks=None, **_):
        calls.append(cfg)
        if len(calls) == 2:
            raise optuna.TrialPruned("pruned at epoch 0")
        if len(calls) == 3:
            raise ValueError("boom\nsecond line")
        return 0.8 + float(cfg.optimizer.lr)  # 0.80xxxxxxxx: more digits than anyone reads

    monkeypatch.setattr("reglab.run.run_one", fake_run_one)
    assert run_train_in_process([*SEARCH, "hparams_search.n_trials=4"], tmp_path) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("reglab: trial ")]
    trials = load(tmp_path).trials
    assert len(lines) == 4 and len(trials) == 4
    # Optuna's own line per trial and a failed trial's traceback stay off the console.
    assert not [line for line in out.splitlines() if line.startswith("Trial ")]
    assert "finished with value" not in out and "Traceback" not in out

    first, pruned, failed, last = lines
    value = f"{trials[0].value:.4f}"  # 4 decimals
    strength = f"{trials[0].params['regularization.strength']:.4g}"  # 4 significant digits
    assert first.startswith(f"reglab: trial 0: best/val/loss={value} (")
    assert f"regularization.strength={strength}," in first
    assert first.endswith("); best so far trial 0")
    assert pruned.startswith("reglab: trial 1: pruned after 0 epochs (")
    assert pruned.endswith(f"); best so far trial 0 ({value})")
    assert failed.startswith("reglab: trial 2: failed: ValueError: boom (")
    best = 0 if trials[0].value < trials[3].value else 3
    assert last.startswith(f"reglab: trial 3: best/val/loss={trials[3].value:.4f} (")
    assert last.endswith(f"; best so far trial {best}" + (f" ({value})" if best == 0 else ""))
    for line in lines:  # no number longer than 4 decimals or 4 significant digits
        for shown in re.findall(r"=(-?[0-9.]+(?:e[-+][0-9]+)?)", line):
            digits = shown.split("e")[0].lstrip("-0.").replace(".", "")
            assert len(digits) <= 4 or len(shown.split(".")[1]) == 4, line
    assert f"; best trial {best}: best/val/loss={trials[best].value:.4f} (" in out


def test_the_study_runs_each_trial_with_the_runner_it_is_given(tmp_path):
    """`run_trials` takes its trial runner as a parameter (the command passes reglab.run.run_one):
    a stand-in returning the drawn lr runs here, with no training and nothing patched."""
    from hydra import initialize_config_dir

    from conftest import CONF_DIR, compose_config
    from reglab.search import OptunaPruning, run_trials
    from search_support import SEARCH

    space = "hparams_search.params={optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2}}"
    cfg = compose_config([*SEARCH, space], tmp_path / "run")
    calls = []

    def runner(trial_cfg, extra_callbacks=None, *, one_of_many=False):
        calls.append((trial_cfg, extra_callbacks, one_of_many))
        return float(trial_cfg.optimizer.lr)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # trials compose
        ran = run_trials(study, cfg, tmp_path / "search", run_trial=runner)
    assert ran == [0, 1] and len(calls) == 2
    for trial, (trial_cfg, extra, one_of_many) in zip(study.trials, calls, strict=True):
        assert trial.value == trial.params["optimizer.lr"] == trial_cfg.optimizer.lr
        assert trial_cfg.paths.output_dir == str(tmp_path / "search" / f"trial_{trial.number:04d}")
        assert [type(c) for c in extra] == [OptunaPruning] and one_of_many
