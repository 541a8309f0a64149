"""A group of runs trained as one stacked model (reglab.stack.group) equals the same runs trained
one by one (reglab.run.run_one): weights, test metrics, history, stopping and outputs.

Float64 on the CPU, without dropout, so that the comparison is within 1e-8.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_config, read_metrics, run_train_py
from reglab.errors import RunInterrupted
from reglab.module import RegLabModule
from reglab.run import run_one
from reglab.stack.group import member_bytes, memory_budget, run_members, stack_reason
from reglab.stack.module import StackedModule

BASE = [
    "model=mlp",
    "model.width=16",
    "model.dropout=0",
    "data=digits",
    "trainer.precision=64-true",
    "trainer.max_epochs=2",
    "logger=none",
    "callbacks=[model_checkpoint]",  # the best checkpoint; the others' outputs are not compared
]
TOL = 1e-8
# What differs between two runs of one config by nature (when and where they ran).
RUN_BOOKKEEPING = {"wall_time_s", "pid", "host", "best_checkpoint"}


def stacked_and_sequential(tmp_path: Path, common: list[str], variants: list[list[str]]) -> list:
    """Run each variant alone and all of them stacked; return [(alone record, stacked record)]."""
    for n, variant in enumerate(variants):
        run_one(compose_config([*BASE, *common, *variant], tmp_path / f"alone{n}"))
    stacked = [
        compose_config([*BASE, *common, *variant], tmp_path / f"stacked{n}")
        for n, variant in enumerate(variants)
    ]
    objectives = run_members(stacked)
    pairs = []
    for n, objective in enumerate(objectives):
        alone, member = read_metrics(tmp_path / f"alone{n}"), read_metrics(tmp_path / f"stacked{n}")
        assert objective == member["objective"]
        pairs.append((alone, member))
    return pairs


def assert_same_run(alone: dict, member: dict) -> None:
    """Same keys, history, stopping, test metrics within TOL, best weights within TOL."""
    assert member["status"] == "ok"
    assert set(member) == set(alone)
    for key in set(alone) - RUN_BOOKKEEPING - {"history", "test", "final", "best", "objective"}:
        assert member[key] == alone[key], key
    assert len(member["history"]) == len(alone["history"])
    for ours, theirs in zip(member["history"], alone["history"], strict=True):
        assert set(ours) == set(theirs)
        for key, value in theirs.items():
            assert math.isclose(ours[key], value, rel_tol=1e-6, abs_tol=1e-7), key
    for key, value in alone["test"].items():
        assert abs(member["test"][key] - value) <= TOL, key
    ours = torch.load(member["best_checkpoint"], weights_only=False)
    theirs = torch.load(alone["best_checkpoint"], weights_only=False)
    assert (ours["epoch"], ours["global_step"]) == (theirs["epoch"], theirs["global_step"])
    assert set(ours["state_dict"]) == set(theirs["state_dict"])
    for key, value in theirs["state_dict"].items():
        assert torch.allclose(ours["state_dict"][key], value, rtol=0, atol=TOL), key
    # The optimizer's state at the best epoch, in the layout of the run's own optimizer.
    (our_optimizer,), (their_optimizer,) = ours["optimizer_states"], theirs["optimizer_states"]
    assert our_optimizer["param_groups"] == their_optimizer["param_groups"]
    assert ours["lr_schedulers"] == theirs["lr_schedulers"]
    for index, state in their_optimizer["state"].items():
        for key, value in state.items():
            assert torch.allclose(our_optimizer["state"][index][key], value, rtol=0, atol=TOL)
    assert Path(member["best_checkpoint"]).name == Path(alone["best_checkpoint"]).name
    loaded = RegLabModule.load_from_checkpoint(member["best_checkpoint"])
    assert loaded.hparams == RegLabModule.load_from_checkpoint(alone["best_checkpoint"]).hparams


def test_seed_and_strength_group_equals_its_runs(tmp_path):
    variants = [
        ["seed=0", "regularization.strength=1e-3"],
        ["seed=1", "regularization.strength=3e-2"],
    ]
    pairs = stacked_and_sequential(tmp_path, ["regularization=l2"], variants)
    for alone, member in pairs:
        assert_same_run(alone, member)
    # The members differ: each has its own initialization, data order and penalty.
    assert pairs[0][1]["history"] != pairs[1][1]["history"]


@pytest.mark.slow
def test_seed_only_group_equals_its_runs(tmp_path):
    pairs = stacked_and_sequential(tmp_path, [], [["seed=0"], ["seed=1"], ["seed=2"]])
    for alone, member in pairs:
        assert_same_run(alone, member)
    # The members differ: each has its own initialization and data order.
    assert pairs[0][1]["test"] != pairs[1][1]["test"]


@pytest.mark.slow
def test_l2_strength_only_group_equals_its_runs(tmp_path):
    variants = [["regularization.strength=1e-3"], ["regularization.strength=3e-2"]]
    for alone, member in stacked_and_sequential(tmp_path, ["regularization=l2"], variants):
        assert_same_run(alone, member)


@pytest.mark.slow
def test_l1_proximal_sgd_strength_only_group_equals_its_runs(tmp_path):
    common = ["regularization=l1", "regularization.method=proximal", "optimizer=sgd"]
    variants = [["regularization.strength=1e-3"], ["regularization.strength=1e-2"]]
    pairs = stacked_and_sequential(tmp_path, common, variants)
    for alone, member in pairs:
        assert_same_run(alone, member)
    assert pairs[1][1]["final"]["reg/zero_fraction"] > 0  # the proximal step zeroes weights


@pytest.mark.slow
def test_l1_proximal_adam_strength_only_group_equals_its_runs(tmp_path):
    # Adam's adaptive threshold: per coordinate, from each member's own second moments.
    common = [
        "regularization=l1",
        "regularization.method=proximal",
        "regularization.proximal_threshold=adaptive",
    ]
    variants = [["regularization.strength=1e-3"], ["regularization.strength=3e-2"]]
    for alone, member in stacked_and_sequential(tmp_path, common, variants):
        assert_same_run(alone, member)


@pytest.mark.slow
def test_mixed_group_equals_its_runs(tmp_path):
    common = ["regularization=elastic_net", "optimizer=adamw"]
    variants = [
        ["seed=0", "optimizer.lr=1e-3", "regularization.strength=1e-3", "label_smoothing=0.1"],
        [
            "seed=1",
            "optimizer.lr=3e-3",
            "optimizer.weight_decay=0.1",
            "regularization.l1_ratio=0.2",
        ],
    ]
    for alone, member in stacked_and_sequential(tmp_path, common, variants):
        assert_same_run(alone, member)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["step", "plateau"])
def test_scheduled_lr_group_equals_its_runs(tmp_path, scheduler):
    # Each member's own schedule; plateau on the member's own val/loss (patience 0: it acts).
    common = [f"scheduler={scheduler}", "trainer.max_epochs=4"]
    common += ["scheduler.step_size=1"] if scheduler == "step" else ["scheduler.patience=0"]
    variants = [["optimizer.lr=3e-2"], ["optimizer.lr=1e-1"]]
    for alone, member in stacked_and_sequential(tmp_path, common, variants):
        assert_same_run(alone, member)


@pytest.mark.slow
def test_lr_only_group_equals_its_runs(tmp_path):
    variants = [["optimizer.lr=1e-3"], ["optimizer.lr=1e-2"]]
    for alone, member in stacked_and_sequential(tmp_path, [], variants):
        assert_same_run(alone, member)


@pytest.mark.slow
def test_members_stopping_at_different_epochs_equal_their_runs(tmp_path):
    # With BatchNorm: a stopped member's running statistics stay as they were when it stopped.
    common = ["early_stopping.patience=1", "trainer.max_epochs=12", "model.norm=batch_norm1d"]
    variants = [["optimizer.lr=0.3"], ["optimizer.lr=3e-3"]]
    pairs = stacked_and_sequential(tmp_path, common, variants)
    for alone, member in pairs:
        assert_same_run(alone, member)
    stopped = [member["epochs_run"] for _, member in pairs]
    assert stopped[0] != stopped[1], stopped
    assert pairs[0][1]["stopping_reason"]


@pytest.mark.slow
def test_gradient_clipping_is_per_member(tmp_path):
    common = ["trainer.gradient_clip_val=0.05"]
    variants = [["seed=0", "optimizer.lr=3e-2"], ["seed=1", "optimizer.lr=3e-2"]]
    for alone, member in stacked_and_sequential(tmp_path, common, variants):
        assert_same_run(alone, member)


@pytest.mark.slow
def test_vectorized_sweep_writes_each_job_as_a_run(tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "hydra/launcher=vectorized",
        "model=mlp",
        "model.width=16",
        "seed=0,1,2",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_train_py(command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train as one stacked model" in result.stdout + result.stderr
    folders = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in folders] == ["0", "1", "2"]
    for job, folder in enumerate(folders):
        record = read_metrics(folder)
        assert record["status"] == "ok"
        assert record["seed"] == job
        assert Path(record["best_checkpoint"]).is_file()
        assert (folder / ".hydra" / "config.yaml").is_file()
        assert "Total params" in (folder / "model_summary.txt").read_text()
        assert any((folder / "tensorboard").glob("events.out.tfevents.*"))
        log = (folder / "train.log").read_text()
        assert f"seed {job}" in log and f"reglab: job {folder.name}: ok" in log
    report = subprocess.run(
        [sys.executable, "-m", "reglab.report.cli", str(sweep)], capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| default | 3 | 0 | 0 |" in report.stdout  # three ok runs, none failed
    # +resume_sweep reruns only the unfinished member; the finished ones are skipped.
    (folders[1] / "metrics.json").unlink()
    resumed = run_train_py([*command, f"+resume_sweep={sweep}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert f"skipping {folders[0].name}: already ok" in said
    assert f"skipping {folders[2].name}: already ok" in said
    assert f"reglab: job {folders[1].name}: ok" in said
    assert read_metrics(folders[1])["status"] == "ok"


@pytest.mark.slow
def test_a_diverging_member_fails_alone(tmp_path):
    variants = [["optimizer.lr=1e8"], ["optimizer.lr=1e-2"]]
    configs = [
        compose_config([*BASE, "optimizer=sgd", *variant], tmp_path / f"member{n}")
        for n, variant in enumerate(variants)
    ]
    objectives = run_members(configs)
    failed, ok = read_metrics(tmp_path / "member0"), read_metrics(tmp_path / "member1")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("TrainingDiverged: training diverged at epoch 1")
    assert objectives[0] is None
    assert ok["status"] == "ok" and ok["epochs_run"] == 2
    assert objectives[1] == ok["objective"]


@pytest.mark.parametrize("override", ["dropout=mc", "constraint=max_norm"])
def test_a_control_the_stacked_fit_does_not_apply_is_a_reason(make_cfg, override):
    assert override.split("=")[0] in stack_reason(make_cfg(override))
    assert stack_reason(make_cfg()) is None


def test_a_failing_stacked_fit_is_recorded_in_every_member(tmp_path, monkeypatch):
    def failing_fit(runs):
        raise RuntimeError("no stacked form")

    monkeypatch.setattr("reglab.stack.group.fit", failing_fit)
    configs = [compose_config([*BASE, f"seed={n}"], tmp_path / f"member{n}") for n in range(2)]
    assert run_members(configs) == [None, None]
    for n in range(2):
        record = read_metrics(tmp_path / f"member{n}")
        assert record["status"] == "failed"
        assert record["error"] == "RuntimeError: no stacked form"


def test_an_interrupted_fit_records_every_member_as_interrupted(tmp_path, monkeypatch):
    def interrupted(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(StackedModule, "training_step", interrupted)
    configs = [compose_config([*BASE, f"seed={n}"], tmp_path / f"member{n}") for n in range(2)]
    with pytest.raises(RunInterrupted, match="interrupted at epoch 1"):
        run_members(configs)
    for n in range(2):
        record = read_metrics(tmp_path / f"member{n}")
        assert record["status"] == "interrupted"
        assert record["error"] == "interrupted at epoch 1"


def test_member_bytes_counts_weights_data_and_activations(make_cfg):
    small, wide = (member_bytes(make_cfg("model=mlp", f"model.width={w}")) for w in (16, 256))
    wide_64 = member_bytes(make_cfg("model=mlp", "model.width=256", "trainer.precision=64-true"))
    data = 1797 * 64 * 4 + 1797 * 8  # digits: float32 inputs and int64 labels, in three splits
    assert data < small < wide < wide_64
    assert member_bytes(make_cfg("model=mlp", "data.batch_size=0")) == 0  # the run will say why
    assert memory_budget(make_cfg()) > 0


@pytest.mark.slow
def test_dropout_schedule_rates_per_member(tmp_path):
    # dropout=zero: the schedule sets every dropout layer to 0 whatever model.dropout says, so
    # the members equal their runs exactly; its dropout/p is in each member's history.
    variants = [["seed=0"], ["seed=1"]]
    common = ["dropout=zero", "model.dropout=0.5"]
    for alone, member in stacked_and_sequential(tmp_path, common, variants):
        assert_same_run(alone, member)
        assert [row["dropout/p"] for row in member["history"]] == [0.0, 0.0]


@pytest.mark.slow
def test_members_at_other_constant_rates_keep_their_own(tmp_path):
    # K rates on the stacked dropout layers: the member at rate 0 computes what its run computes.
    variants = [["dropout.p=0.0"], ["dropout.p=0.5"]]
    (alone, member), (_, dropping) = stacked_and_sequential(
        tmp_path, ["dropout=constant"], variants
    )
    assert_same_run(alone, member)
    assert dropping["status"] == "ok"
    assert [row["dropout/p"] for row in dropping["history"]] == [0.5, 0.5]
