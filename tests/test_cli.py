"""What users type: `python train.py ...` in a subprocess, and the one-line config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException

from conftest import CONF_DIR, read_metrics, run_train_py
from reglab.cli import unknown_group_options
from reglab.data import DigitsDataModule
from reglab.module import RegLabModule

QUIET = ["print_config=false", "trainer.enable_progress_bar=false"]


def _only_run_dir(base: Path) -> Path:
    (run_dir,) = [p.parent for p in base.rglob("metrics.json")]
    return run_dir


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_train_py_default_model_writes_a_run_folder(tmp_path):
    result = run_train_py(["model=selu_net", "trainer.max_epochs=2", *QUIET], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run_dir(tmp_path / "outputs" / "runs")
    metrics = read_metrics(run_dir)
    assert metrics["epochs_run"] == 2 and metrics["test"]["test/acc"] > 0.8
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "reglab: 2 epochs" in result.stdout


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_ddp_cpu_runs_two_processes_and_writes_one_metrics_json(tmp_path):
    result = run_train_py(
        ["trainer=ddp_cpu", "trainer.max_epochs=2", "model=mlp", *QUIET], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = _only_run_dir(tmp_path / "outputs")
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second rank ran
    assert "GLOBAL_RANK: 1" in (run_dir / "train_ddp_process_1.log").read_text()
    assert "sync_dist" not in result.stdout + result.stderr  # Lightning's unsynced-value warning
    metrics = read_metrics(run_dir)
    assert metrics["epochs_run"] == 2
    # reg/data_loss is the epoch's over both ranks' shards, as train/loss (not rank 0's alone).
    final = metrics["final"]
    assert final["reg/data_loss"] == pytest.approx(final["train/loss"], rel=1e-5)
    # Each rank tested its shard; the synced metric must equal one pass over the whole test split.
    module = RegLabModule.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True).eval()
    test = DigitsDataModule().splits["test"]
    with torch.no_grad():
        accuracy = (module(test.x).argmax(1) == test.y).float().mean().item()
    assert metrics["test"]["test/acc"] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_fast_dev_run_leaves_nothing_behind(tmp_path):
    result = run_train_py(["debug=fdr", *QUIET], cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()
    assert list((tmp_path / "reglab-debug").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=mlp", "model.activation=relux"], ["model.activation", "'relux'", "mish"]),
        pytest.param(  # found while building the net: after importing Lightning, ~12 s
            ["model=cnn", "model.norm={batch_norm2d: {eps_: 1}}"],
            ["eps_", "valid: ", "momentum"],
            marks=pytest.mark.slow,
        ),
        (["model=transformer"], ["model", "'transformer'", "selu_net", "cnn"]),
        pytest.param(["data=idx"], ["data.path"], marks=pytest.mark.slow),
    ],
    ids=["layer-name", "layer-kwarg", "group-option", "missing-path"],
)
def test_bad_config_exits_nonzero_with_one_clear_line(tmp_path, args, expected):
    result = run_train_py([*args, *QUIET], cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("reglab: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in expected:
        assert fragment in errors[0]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_unknown_group_options_checks_every_sweep_value():
    problems = unknown_group_options(["-m", "model=mlp,nope", "optimizer=sgd", "seed=1"], CONF_DIR)
    assert problems == [
        "model: unknown option 'nope'; valid choices: "
        + ", ".join(sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
    ]
    valid = ["model.width=3", "trainer=ddp_cpu", "hydra/launcher=basic", "model=null"]
    assert unknown_group_options(valid, CONF_DIR) == []


def test_unknown_group_option_in_process_is_a_hydra_error(make_cfg):
    with pytest.raises(MissingConfigException):
        make_cfg("optimizer=lion")


GROUP_OPTIONS = [
    (group.name, option.stem)
    for group in sorted(CONF_DIR.iterdir())
    if group.is_dir() and group.name not in ("hydra", "paths")
    for option in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize(
    ("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS]
)
def test_every_config_option_composes_and_resolves(make_cfg, group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "idx":
        overrides.append("data.path=/somewhere")
    cfg = make_cfg(*overrides)
    from omegaconf import OmegaConf

    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_run_folders_differ_for_runs_started_in_the_same_second(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    run_dirs = []
    for _ in range(2):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
        run_dirs.append(OmegaConf.select(cfg, "hydra.run.dir"))
    assert run_dirs[0] != run_dirs[1]
    assert run_dirs[0].startswith("outputs/runs/") and run_dirs[0].endswith("_train")
