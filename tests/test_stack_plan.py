"""The grouping plan of vectorized studies and the vectorized launcher's frame.

`reglab.stack.plan.plan_jobs` on configs composed from conf/ as a sweep's jobs are: which jobs
train together as one stacked model, and the one reason line of every job that runs alone. The
launcher (`hydra/launcher=vectorized`) hands each group to `reglab.stack.group.run_group` (a
stand-in here) and runs the other jobs as Hydra's basic launcher does.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONF_DIR, SMALL_RUN, run_train_in_process, run_train_py
from hydra_plugins.reglab_vectorized_launcher import NOT_AVAILABLE
from reglab.errors import ConfigError
from reglab.stack.plan import Member, Plan, plan_jobs, split


def job(*overrides: str) -> DictConfig:
    """A sweep job's composed config (with its `hydra` node, as a launcher gets it).

    Hydra composes each set of group options once (`group=option`, the slow part); a key's
    value (`a.b=value`) is set on a copy as Hydra's override sets it.
    """
    options = tuple(o for o in overrides if (CONF_DIR / o.partition("=")[0]).is_dir())
    cfg = copy.deepcopy(composed(*options))
    for override in PARSER.parse_overrides([o for o in overrides if o not in options]):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


@functools.cache
def composed(*options: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(options), return_hydra_config=True)


PARSER = OverridesParser.create()


def plan(*jobs: tuple[str, ...], **options) -> Plan:
    """The plan of jobs given by their overrides, on the digits MLP."""
    return plan_jobs([job("model=mlp", *overrides) for overrides in jobs], **options)


# --- groups ----------------------------------------------------------------------------------


def test_jobs_that_differ_only_in_seed_form_one_group():
    assert plan(("seed=0",), ("seed=1",), ("seed=2",)) == Plan(groups=((0, 1, 2),), alone={})


def test_jobs_that_differ_only_in_penalty_strength_form_one_group():
    l1 = ("regularization=l1", "regularization.method=proximal")
    result = plan(
        (*l1, "regularization.strength=1e-4"),
        (*l1, "regularization.strength=1e-3"),
        (*l1, "regularization.strength=1e-2"),
    )
    assert result.groups == ((0, 1, 2),) and not result.alone


def test_jobs_that_differ_only_in_lr_form_one_group():
    result = plan(("optimizer.lr=1e-3",), ("optimizer.lr=1e-2",))
    assert result.groups == ((0, 1),) and not result.alone


def test_jobs_that_differ_in_several_vectorizable_and_bookkeeping_keys_form_one_group():
    net = ("regularization=elastic_net", "dropout=constant")
    result = plan(
        (*net, "seed=0", "regularization.strength=1e-4", "tags=[a]"),
        (*net, "seed=1", "optimizer.lr=1e-2", "regularization.l1_ratio=0.2", "task_name=other"),
        (*net, "model.dropout=0.3", "dropout.p=0.2", "label_smoothing=0.1"),
        (*net, "optimizer.weight_decay=1e-2", "print_config=true"),
        # written otherwise, the same value: dropout.epochs is ${trainer.max_epochs} = 20
        (*net, "dropout.epochs=20"),
    )
    assert result.groups == ((0, 1, 2, 3, 4),) and not result.alone


def test_dropout_options_of_one_constant_schedule_differ_only_in_their_rate():
    # ablation_dropout's baseline `zero` is the constant schedule at p = 0
    result = plan(("dropout=zero",), ("dropout=constant",), ("dropout=constant", "seed=3"))
    assert result.groups == ((0, 1, 2),)


def test_groups_keep_launch_order_and_units_interleave_groups_and_alone_jobs():
    result = plan(
        ("seed=0", "model.width=16"),
        ("seed=0", "model.width=32"),
        ("seed=1", "model.width=16"),
        ("seed=1", "model.width=32"),
        ("seed=0", "augmentation=noise"),
    )
    assert result.groups == ((0, 2), (1, 3))
    assert result.units() == [(0, 2), (1, 3), (4,)]


# --- reasons: keys that differ ----------------------------------------------------------------


def test_a_key_that_is_not_vectorizable_is_named_with_both_values():
    result = plan(("model.width=16",), ("model.width=32",))
    assert result.groups == ()
    assert result.alone == {
        0: "model.width differs from job 1 (16 vs 32): not a vectorizable key",
        1: "model.width differs from job 0 (32 vs 16): not a vectorizable key",
    }


def test_another_option_of_a_group_is_named_by_its_group_and_reasons_name_job_numbers():
    result = plan(("seed=0",), ("seed=1",), ("data=moons",), first_number=7)
    assert result.groups == ((0, 1),)
    assert result.alone == {2: "data differs from job 7 (moons vs digits): another option"}


def test_more_than_one_differing_key_is_counted():
    result = plan(("model.width=16", "model.depth=1"), ("seed=1",))
    assert result.alone[0] == (
        "model.width differs from job 1 (16 vs 256): not a vectorizable key (and 1 more)"
    )


def test_a_job_alone_in_its_sweep_says_so():
    assert plan(("seed=0",)).alone == {0: "no other job of the sweep can train with it"}


# --- reasons: parts without a stacked form -----------------------------------------------------

UNSUPPORTED = [
    (("augmentation=mixup",), "augmentation=mixup is not vectorized"),
    (("augmentation=noise",), "augmentation=noise is not vectorized"),
    (("batchnorm=freeze",), "batchnorm=freeze is not vectorized"),
    (("dropout=early",), "dropout=early is not vectorized"),
    (("dropout=mc",), "dropout=mc is not vectorized"),
    (("dropout=schedule",), "dropout=schedule is not vectorized (dropout.schedule=linear)"),
    (("constraint=max_norm",), "constraint=max_norm is not vectorized"),
    (
        ("scheduler=step", "scheduler._target_=torch.optim.lr_scheduler.OneCycleLR"),
        "scheduler=step is not vectorized",
    ),
    (("callbacks=none",), "callbacks=none is not vectorized"),
    (("callbacks=[model_checkpoint]",), "callbacks=[model_checkpoint] is not vectorized"),
    (("logger=csv",), "logger=csv is not vectorized"),
    (("debug=limit",), "debug=limit is not vectorized"),
    (("optimizer._target_=torch.optim.RMSprop",), "optimizer=adam is not vectorized"),
    (
        ("regularization=l1", "regularization.kind=group_lasso"),
        "regularization=l1 is not vectorized (regularization.kind=group_lasso)",
    ),
    (
        ("early_stopping._target_=my_lab.Stop",),
        "early_stopping=val_loss is not vectorized",
    ),
    (
        ("trainer=ddp",),
        "trainer.devices=auto, trainer.strategy=ddp: a stacked model trains on one device",
    ),
    (("trainer.devices=2",), "trainer.devices=2: a stacked model trains on one device"),
    (
        ("trainer.num_nodes=2",),
        "trainer.num_nodes=2: a stacked model trains on one device",
    ),
    (
        ("trainer.precision=16-mixed",),
        "trainer.precision=16-mixed is not vectorized (32 and 64 bit only)",
    ),
    (("ckpt_path=/runs/a",), "ckpt_path (a resumed run) is not vectorized"),
    (
        ("hparams_search=penalty_search",),
        "hparams_search=penalty_search (an Optuna search) is not vectorized",
    ),
]


@pytest.mark.parametrize(("overrides", "reason"), UNSUPPORTED, ids=lambda v: str(v)[:40])
def test_a_part_without_a_stacked_form_runs_alone_with_its_name(overrides, reason):
    # The same job at two other seeds still trains as one group.
    result = plan(("seed=0",), ("seed=1",), ("seed=2", *overrides))
    assert result.groups == ((0, 1),)
    assert result.alone == {2: reason}


def test_supported_options_of_every_control_form_groups():
    for overrides in [
        ("regularization=l2",),
        ("regularization=elastic_net", "regularization.method=proximal"),
        ("early_stopping=val_acc",),
        ("early_stopping=none",),
        ("optimizer=sgd",),
        ("optimizer=adamw",),
        ("trainer.precision=64-true",),
        ("logger=none",),
        ("trainer=cpu",),
        *((f"scheduler={name}",) for name in ("step", "multistep", "cosine", "plateau")),
    ]:
        result = plan((*overrides, "seed=0"), (*overrides, "seed=1"))
        assert result.groups == ((0, 1),), overrides


def test_the_engine_reason_is_asked_of_each_groups_first_member():
    asked = []

    def engine_reason(cfg: DictConfig) -> str | None:
        asked.append((cfg.seed, cfg.model.width))
        return "model.layers[1] (nn.LSTM) has no stacked form" if cfg.model.width == 32 else None

    result = plan(
        ("seed=0", "model.width=16"),
        ("seed=0", "model.width=32"),
        ("seed=1", "model.width=16"),
        ("seed=1", "model.width=32"),
        engine_reason=engine_reason,
    )
    assert asked == [(0, 16), (0, 32)]
    assert result.groups == ((0, 2),)
    assert result.alone == dict.fromkeys((1, 3), "model.layers[1] (nn.LSTM) has no stacked form")


# --- splitting a group -----------------------------------------------------------------------


def test_split_gives_the_fewest_balanced_parts_in_launch_order():
    assert split([0, 1, 2, 3, 4], None) == [[0, 1, 2, 3, 4]]
    assert split([0, 1, 2, 3, 4], 4) == [[0, 1, 2], [3, 4]]
    assert split([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
    assert split([5, 6, 7, 8], 1) == [[5], [6], [7], [8]]


SEEDS = [(f"seed={seed}",) for seed in range(5)]


def test_max_members_splits_a_group_and_a_member_left_alone_says_why():
    result = plan(*SEEDS, max_members=2, first_number=10)
    assert result.groups == ((0, 1), (2, 3))
    assert result.alone == {
        4: "hydra.launcher.max_members=2 split its group (jobs 10, 11, 12, 13, 14)"
    }
    assert plan(*SEEDS, max_members=4).groups == ((0, 1, 2), (3, 4))


def test_a_memory_budget_splits_a_group_by_the_first_members_estimate():
    estimated = []

    def member_bytes(cfg: DictConfig) -> int:
        estimated.append(cfg.seed)
        return 3 * 2**20

    result = plan(*SEEDS, member_bytes=member_bytes, memory_budget=7 * 2**20)
    assert estimated == [0]
    assert result.groups == ((0, 1), (2, 3))
    assert result.alone == {
        4: "memory (3.0 MiB a member, budget 7.0 MiB) split its group (jobs 0, 1, 2, 3, 4)"
    }
    # the smaller limit decides, and names itself
    both = plan(*SEEDS[:3], member_bytes=member_bytes, memory_budget=8e6, max_members=1)
    assert both.alone[0].startswith("hydra.launcher.max_members=1 split")
    # a member larger than the budget: every member alone
    tight = plan(*SEEDS[:2], member_bytes=member_bytes, memory_budget=2**20)
    assert tight.groups == () and tight.alone[1].startswith("memory (3.0 MiB a member")


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_members", 0), ("max_members", "two"), ("memory_budget", -1), ("memory_budget", 1.5)],
)
def test_a_bad_group_limit_is_one_error_naming_its_key(key, value):
    with pytest.raises(ConfigError, match=rf"^hydra\.launcher\.{key}: must be an integer >= 1"):
        plan(("seed=0",), **{key: value})


# --- the launcher ----------------------------------------------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> list[list[Member]]:
    """A stand-in reglab.stack.group: run_group records its members (nothing trains); width 32
    has no stacked form. Training a job that runs alone is stubbed too (its folder is Hydra's)."""
    groups: list[list[Member]] = []
    module = ModuleType("reglab.stack.group")

    def run_group(members, *, hydra_context, task_function, sweep_config):
        assert hydra_context is not None and callable(task_function)
        assert sweep_config.hydra.launcher.max_members == 2
        groups.append(list(members))
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5) for _ in members]

    module.run_group = run_group
    module.stack_reason = lambda cfg: "fake: no stacked form" if cfg.model.width == 32 else None
    monkeypatch.setitem(sys.modules, "reglab.stack.group", module)
    monkeypatch.setattr("reglab.run.train", lambda cfg: 0.25)
    return groups


def test_the_launcher_hands_each_group_to_run_group_and_runs_the_others_alone(
    engine, tmp_path, capsys, monkeypatch
):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    composed = []
    load = ConfigLoaderImpl.load_sweep_config
    monkeypatch.setattr(
        ConfigLoaderImpl,
        "load_sweep_config",
        lambda self, *args, **kw: composed.append(1) or load(self, *args, **kw),
    )
    args = ["-m", "hydra/launcher=vectorized", "hydra.launcher.max_members=2", "model=mlp"]
    code = run_train_in_process(
        [*args, "seed=0,1,2", "model.width=16,32", *SMALL_RUN[2:]], tmp_path
    )
    out = capsys.readouterr().out
    assert code == 0
    assert len(composed) == 6  # each job once: the sweeper's configs are handed over
    # jobs 0, 2, 4 (width 16) in parts of at most 2, in launch order, with their configs
    assert [[m.number for m in group] for group in engine] == [[0, 2]]
    member = engine[0][1]
    assert {"seed=1", "model.width=16"} <= set(member.overrides)
    assert member.config.hydra.job.num == 2 and member.config.seed == 1
    for number in (0, 2):
        assert f"#{number} :" in out and f"job {number} runs alone" not in out
    assert out.count("reglab: jobs 0, 2 train as one stacked model") == 1
    reasons = {4: "hydra.launcher.max_members=2 split its group (jobs 0, 2, 4)"}
    reasons.update(dict.fromkeys((1, 3, 5), "fake: no stacked form"))
    sweep = next((tmp_path / "outputs" / "multirun").glob("*/*"))
    for number, reason in reasons.items():  # alone: as the basic launcher runs them
        assert out.count(f"reglab: job {number} runs alone: {reason}") == 1
        (folder,) = sweep.glob(f"{number}_seed=*")
        assert (folder / ".hydra" / "overrides.yaml").is_file()


def test_a_bad_launcher_option_is_one_error_line(tmp_path, capsys):
    code = run_train_in_process(
        ["-m", "hydra/launcher=vectorized", "hydra.launcher.max_members=0", "seed=0,1"], tmp_path
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "reglab: error: hydra.launcher.max_members: must be an integer >= 1, got 0" in err


def job_files(sweep: Path) -> dict[str, list[str]]:
    """Each job folder's files (TensorBoard event files by count: their names hold times)."""
    files = {}
    for folder in sorted(p for p in sweep.iterdir() if p.is_dir()):
        names = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
        files[folder.name] = sorted(re.sub(r"tfevents\..*", "tfevents", n) for n in names)
    return files


def scalar_tags(job: Path) -> list[str]:
    events = EventAccumulator(str(job / "tensorboard"))
    events.Reload()
    return sorted(events.Tags()["scalars"])


@pytest.mark.slow
def test_a_vectorized_sweep_folder_is_the_basic_launchers(tmp_path):
    # Without dropout: a stacked member draws its masks from the shared generator, not its run's.
    sweep_args = [
        *("-m", "seed=0,1", "model.width=16,32", "trainer.max_epochs=1", "model=mlp"),
        "model.dropout=0",
    ]
    sweeps = {}
    for launcher in ("basic", "vectorized"):
        cwd = tmp_path / launcher
        cwd.mkdir()
        result = run_train_py([*sweep_args, f"hydra/launcher={launcher}"], cwd)
        assert result.returncode == 0, result.stderr[-2000:]
        sweeps[launcher] = (next((cwd / "outputs" / "multirun").glob("*/*")), result.stdout)
    (basic, _), (vectorized, out) = sweeps["basic"], sweeps["vectorized"]
    # A stacked member keeps no checkpoints/last.ckpt yet (its loop, callback and random state
    # are the group's): every other file is there, and the gap is named here until it closes.
    without_last = {
        job: [name for name in names if name != "checkpoints/last.ckpt"]
        for job, names in job_files(basic).items()
    }
    stacked = job_files(vectorized)
    assert stacked.keys() == without_last.keys()
    for job, names in without_last.items():
        # A member writes its TensorBoard scalars into one event file, a run into several.
        extra, missing = set(stacked[job]) - set(names), set(names) - set(stacked[job])
        assert not extra and not missing, f"{job}: extra {sorted(extra)}, missing {sorted(missing)}"
        # Not yet in a member's folder: the activation monitor's curves (watch/...).
        run_tags = [tag for tag in scalar_tags(basic / job) if not tag.startswith("watch/")]
        assert scalar_tags(vectorized / job) == run_tags
    assert len(job_files(basic)) == 4
    for folder in (p for p in basic.iterdir() if p.is_dir()):
        twin = vectorized / folder.name
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml"):
            assert (twin / name).read_text() == (folder / name).read_text()
        mine, theirs = (json.loads((f / "metrics.json").read_text()) for f in (twin, folder))
        assert mine["status"] == theirs["status"] == "ok"
        assert mine["best"] == pytest.approx(theirs["best"], rel=1e-5)
    # every job says once how it runs (no engine yet: each one alone, saying so)
    engine_missing = importlib.util.find_spec("reglab.stack.group") is None
    for number in range(4):
        said = [
            line
            for line in out.splitlines()
            if f"reglab: job {number} runs alone: " in line
            or re.search(rf"reglab: jobs [\d, ]*\b{number}\b[\d, ]* train as one stacked", line)
        ]
        assert len(said) == 1, said
        if engine_missing:
            assert said[0].endswith(f"reglab: job {number} runs alone: {NOT_AVAILABLE}")
