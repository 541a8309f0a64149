"""Multirun sweeps as users type them: ablation report, failure tolerance, resume, experiments."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import CONF_DIR, compose_config, run_train_py
from reglab.report.cli import build_report

QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "logger=none"]


def _sweep_dir(cwd: Path) -> Path:
    (sweep,) = list((cwd / "outputs" / "multirun").glob("*/*"))
    return sweep


def _metrics(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def _is_png(path: Path) -> bool:
    import matplotlib.image

    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(path).ndim == 3


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_sweep_report_matches_a_recomputation_from_metrics_json(tmp_path):
    result = run_train_py(
        [
            "-m",
            "model=mlp",
            "regularization=l1,l2",
            "regularization.strength=1e-4,1e-2",
            "seed=0,1",
            "trainer.max_epochs=2",
            *QUIET,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reglab sweep: 8 ok, 0 failed, 0 skipped" in result.stdout
    sweep = _sweep_dir(tmp_path)
    runs = _metrics(sweep)
    assert len(runs) == 8 and all(r["status"] == "ok" for r in runs.values())
    assert all(name.split("_", 1)[0].isdigit() for name in runs)  # <job-num>_<overrides>

    written = build_report(sweep)
    with (sweep / "report.csv").open() as f:
        table = {row["config"]: row for row in csv.DictReader(f)}
    assert len(table) == 4
    groups: dict[str, list[float]] = {}
    for run in runs.values():
        key = dict(o.split("=", 1) for o in run["overrides"])
        label = f"regularization={key['regularization']},regularization.strength={key['regularization.strength']}"
        groups.setdefault(label, []).append(run["test"]["test/acc"])
    for label, values in groups.items():
        row = table[label]
        assert int(row["test/acc n"]) == 2
        assert float(row["test/acc mean"]) == pytest.approx(np.mean(values), rel=1e-3)
        assert float(row["test/acc std"]) == pytest.approx(
            np.std(values, ddof=1), rel=1e-3, abs=1e-6
        )
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} == {
        "report_strength.png",
        "report_bars.png",
        "report_val_loss.png",
    }
    assert all(_is_png(p) for p in pngs)
    assert "test/acc" in (sweep / "report.md").read_text()


@pytest.mark.slow  # about 20 s or more; CI runs the slow tests
def test_failed_job_is_recorded_and_resume_reruns_only_it(tmp_path):
    missing = tmp_path / "later.ckpt"
    args = ["-m", "model=mlp", f"ckpt_path=null,{missing}", "trainer.max_epochs=2", *QUIET]
    first = run_train_py(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]  # one job failed, the sweep did not
    assert "reglab sweep: 1 ok, 1 failed, 0 skipped" in first.stdout
    sweep = _sweep_dir(tmp_path)
    runs = _metrics(sweep)
    failed = [name for name, r in runs.items() if r["status"] == "failed"]
    assert len(failed) == 1 and "later.ckpt" in runs[failed[0]]["error"]
    assert "\n" not in runs[failed[0]]["error"]
    build_report(sweep, metrics=["test/acc"])
    rows = {row["config"]: row for row in csv.DictReader((sweep / "report.csv").open())}
    assert sum(int(row["n_failed"]) for row in rows.values()) == 1

    ok_name = next(name for name, r in runs.items() if r["status"] == "ok")
    ok_mtime = (sweep / ok_name / "metrics.json").stat().st_mtime
    shutil.copy(runs[ok_name]["best_checkpoint"], missing)  # the missing input appears
    second = run_train_py([*args, f"+resume_sweep={sweep}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "reglab sweep: 1 ok, 0 failed, 1 skipped" in second.stdout
    assert (sweep / ok_name / "metrics.json").stat().st_mtime == ok_mtime  # not rerun
    assert all(r["status"] == "ok" for r in _metrics(sweep).values())
    assert len(list((tmp_path / "outputs" / "multirun").glob("*/*"))) == 1  # same folder


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_a_sweep_where_every_job_fails_exits_nonzero(tmp_path):
    result = run_train_py(["-m", "model=mlp", "model.init=bogus,worse", *QUIET], cwd=tmp_path)
    assert result.returncode != 0
    assert "reglab sweep: 0 ok, 2 failed" in result.stdout


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
)
def test_experiments_compose_with_their_sweep_params(tmp_path, experiment):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    if experiment.startswith("paper_"):  # a paper's arms; seeds are the user's (README's command)
        assert "paper" in cfg and params
    else:
        assert "seed" in params and len(str(params.seed).split(",")) == 5
    assert cfg.task_name == experiment
    # every swept value composes into a valid config
    for key, values in params.items():
        for value in str(values).split(","):
            compose_config([f"experiment={experiment}", f"{key}={value}"], tmp_path / "x")


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]],
    ids=["joblib", "submitit_local"],
)
def test_launchers_run_each_job_in_its_own_process(tmp_path, launcher):
    result = run_train_py(
        # regularization=none ignores the strength: two of the four jobs are never launched
        ["-m", *launcher, "model=mlp", "seed=0,1", "regularization.strength=1e-4,1e-3"]
        + ["trainer.max_epochs=1", *QUIET],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reglab sweep: 2 ok, 0 failed, 0 skipped, 2 not run" in result.stdout
    runs = list(_metrics(_sweep_dir(tmp_path)).values())
    pids = {run["pid"] for run in runs}
    assert len(runs) == 2 and len(pids) == 2 and all(run["status"] == "ok" for run in runs)


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert "SlurmLauncher" in launcher._target_
    assert {"partition", "gpus_per_node", "timeout_min", "array_parallelism"} <= set(launcher)


def test_report_groups_ignore_knobs_an_option_does_not_use(tmp_path):
    from reglab.callbacks.weight_penalty import ignored_keys
    from reglab.report.collect import Job

    def key(*overrides: str) -> tuple:
        pairs = dict(o.split("=", 1) for o in overrides)
        composed = compose_config([o for o in overrides if "seed=" not in o], tmp_path)
        ignored = tuple(ignored_keys(composed))  # what the run's metrics.json records
        return Job(folder=tmp_path, overrides=pairs, status="ok", ignored_keys=ignored).config_key

    # none ignores every regularization.* knob; l1 / l2 have a fixed l1_ratio; seeds are repeats.
    none = key("regularization=none", "regularization.strength=1e-3", "seed=0")
    assert none == key("regularization=none", "regularization.strength=1e-2", "seed=1")
    l1 = key("regularization=l1", "regularization.l1_ratio=0.2", "regularization.strength=1e-3")
    assert l1 == key(
        "regularization=l1", "regularization.l1_ratio=0.8", "regularization.strength=1e-3"
    )
    assert l1 != key("regularization=l1", "regularization.strength=1e-2")
    assert key("regularization=elastic_net", "regularization.l1_ratio=0.2") != key(
        "regularization=elastic_net", "regularization.l1_ratio=0.8"
    )


def test_report_baseline_defaults_to_a_swept_none_option(tmp_path):
    from reglab.report.collect import Job
    from reglab.report.table import summarize

    def job(option: str, seed: int, acc: float) -> Job:
        overrides = {"dropout": option, "seed": str(seed)}
        return Job(folder=tmp_path, overrides=overrides, status="ok", metrics={"test/acc": acc})

    jobs = [
        job("constant", 0, 0.9),
        job("constant", 1, 0.92),
        job("none", 0, 0.8),
        job("none", 1, 0.84),
    ]
    rows = {row.label: row for row in summarize(jobs, ["test/acc"])}
    assert rows["dropout=none"].is_baseline and not rows["dropout=constant"].is_baseline
    assert rows["dropout=constant"].delta["test/acc"] == pytest.approx(0.91 - 0.82)
    named = {row.label: row for row in summarize(jobs, ["test/acc"], "dropout=constant")}
    assert named["dropout=none"].delta["test/acc"] == pytest.approx(0.82 - 0.91)


def test_jobs_that_compose_to_the_same_run_are_launched_once(tmp_path):
    from reglab.sweep import distinct_jobs, skipped_line

    batch = [
        ["regularization=none", "regularization.strength=0.0001", "seed=0"],
        ["regularization=none", "regularization.strength=0.001", "seed=0"],  # = job 0
        ["regularization=none", "regularization.strength=0.001", "seed=1"],  # another seed
        ["regularization=l1", "regularization.strength=0.0", "seed=0"],  # l1 at 0 is not none
        ["regularization=l1", "regularization.strength=0.001", "seed=0"],
        [
            "regularization=l1",
            "regularization.strength=0.001",
            "regularization.l1_ratio=0.2",
            "seed=0",
        ],  # l1 ignores l1_ratio
        ["regularization=elastic_net", "regularization.l1_ratio=0.2", "seed=0"],
        ["regularization=elastic_net", "regularization.l1_ratio=0.8", "seed=0"],
        [
            "regularization=none",
            "seed=0",
            "tags=[other]",
        ],  # labelled apart: a report filters by tags
    ]
    kept_runs: dict[str, int] = {}
    kept, skipped = distinct_jobs(batch, lambda o: compose_config(o, tmp_path / "x"), kept_runs)
    assert kept == [batch[i] for i in (0, 2, 3, 4, 6, 7, 8)]
    assert skipped == [
        {"overrides": batch[1], "same_as_job": 0},
        {"overrides": batch[5], "same_as_job": 3},  # numbered as launched: the 4th kept job
    ]
    assert skipped_line(batch, skipped) == (
        "reglab: skipping 2 jobs equal to earlier ones "
        "(e.g. regularization=none,regularization.strength=0.001,seed=0 = job 0)"
    )
    # A later batch of the same sweep is compared with the jobs already launched.
    later, skipped = distinct_jobs(
        [batch[1], ["regularization=l2", "seed=0"]],
        lambda o: compose_config(o, tmp_path / "x"),
        kept_runs,
        first_number=len(kept),
    )
    assert later == [["regularization=l2", "seed=0"]] and skipped[0]["same_as_job"] == 0
    assert sorted(kept_runs.values()) == list(range(8))


@pytest.mark.slow  # six one-epoch runs and a resume, in-process; CI runs the slow tests
def test_a_sweep_trains_the_baseline_once_per_seed_and_the_report_counts_it_so(tmp_path, capsys):
    import yaml

    from conftest import SMALL_RUN, run_train_in_process

    args = [
        "-m",
        *SMALL_RUN,
        "regularization=none,l1",
        "regularization.strength=0.0,1e-3",
        "seed=0,1",
        "trainer.max_epochs=1",
        "early_stopping=none",
    ]
    assert run_train_in_process(args, tmp_path) == 0
    out = capsys.readouterr().out
    sweep = _sweep_dir(tmp_path)
    runs = _metrics(sweep)
    assert len(runs) == 6 and all(r["status"] == "ok" for r in runs.values())  # not 8
    assert sorted(int(name.split("_", 1)[0]) for name in runs) == list(range(6))
    assert "reglab: skipping 2 jobs equal to earlier ones (e.g. " in out
    assert "reglab sweep: 6 ok, 0 failed, 0 skipped, 2 not run (equal to earlier jobs)" in out
    skipped = yaml.safe_load((sweep / "skipped_jobs.yaml").read_text())
    swept = ("regularization=", "regularization.strength=", "seed=")
    assert [[o for o in s["overrides"] if o.startswith(swept)] for s in skipped] == [
        ["regularization=none", "regularization.strength=0.001", "seed=0"],
        ["regularization=none", "regularization.strength=0.001", "seed=1"],
    ]
    assert [s["same_as_job"] for s in skipped] == [0, 1]
    # The baseline ran once per seed: every condition, the baseline too, has n = 2 seeds.
    build_report(sweep, metrics=["test/acc"])
    with (sweep / "report.csv").open() as f:
        table = {row["config"]: row for row in csv.DictReader(f)}
    assert {label: int(row["test/acc n"]) for label, row in table.items()} == {
        "regularization=none": 2,
        "regularization=l1,regularization.strength=0.0": 2,
        "regularization=l1,regularization.strength=0.001": 2,
    }

    # A resume skips the six jobs done and launches the two equal ones no more than the first time.
    mtimes = {name: (sweep / name / "metrics.json").stat().st_mtime for name in runs}
    assert run_train_in_process([*args, f"+resume_sweep={sweep}"], tmp_path) == 0
    out = capsys.readouterr().out
    assert "reglab sweep: 0 ok, 0 failed, 6 skipped, 2 not run (equal to earlier jobs)" in out
    assert {name: (sweep / name / "metrics.json").stat().st_mtime for name in runs} == mtimes
    assert set(_metrics(sweep)) == set(runs)
