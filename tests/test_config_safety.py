"""Configs stay data: `task_name` stays a folder name, `_target_` names only allowed modules, and a
`+key` no code reads (a typo) is refused before anything runs."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from conftest import CONF_DIR, QUIET, run_train_py
from reglab.checks import folder_name
from reglab.cli import bad_task_names, unknown_keys
from reglab.config import TARGET_MODULES, allow_any_target, check_targets, validate
from reglab.errors import ConfigError

# Keeps a run that should have been refused short (today's code trains it).
SHORT = [
    *QUIET,
    "model=mlp",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "logger=none",
]


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("reglab: error:")]


# --- task_name ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", "/tmp/x", ".", "..", "", "a b", "x\\y", True])
def test_a_task_name_that_is_not_a_folder_name_is_refused(name):
    with pytest.raises(ConfigError) as error:
        folder_name("task_name", name)
    assert error.value.key == "task_name"


@pytest.mark.parametrize("name", ["train", "ablation_penalty", "v1.2-b", "..x", 7])
def test_a_plain_task_name_is_accepted(name):
    assert folder_name("task_name", name) == str(name)


def test_validate_refuses_a_task_name_that_leaves_the_outputs_folder(make_cfg):
    cfg = make_cfg("task_name=../../escaped")
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert error.value.key == "task_name"


def test_task_names_on_the_command_line_are_checked_one_by_one():
    argv = ["-m", "task_name=ok,../up", "+task_name=/abs", "task_name=choice(a,b/c)", "seed=1"]
    problems = bad_task_names(argv)
    assert [p.split("got ")[1].split(":")[0] for p in problems] == ["'../up'", "'/abs'", "'b/c'"]
    assert all(p.startswith("task_name: ") for p in problems)
    assert bad_task_names(["task_name=mine", "-m", "task_name=a,b.c"]) == []


def test_train_py_refuses_an_escaping_task_name_before_hydra_makes_a_folder(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = run_train_py([*SHORT, "task_name=../../../../escaped"], cwd=work, timeout=600)
    assert result.returncode == 2
    assert len(_error_lines(result)) == 1, result.stderr
    assert _error_lines(result)[0].startswith("reglab: error: task_name: ")
    assert "Traceback" not in result.stderr
    assert list(work.iterdir()) == []  # no run folder, nothing beside it
    assert [p.name for p in tmp_path.iterdir()] == ["work"]


# --- _target_ allow-list -----------------------------------------------------------------------

REFUSED_TARGETS = [
    ("optimizer._target_=builtins.open", "optimizer._target_"),
    ("scheduler=step scheduler._target_=os.system", "scheduler._target_"),
    ("trainer._target_=subprocess.run", "trainer._target_"),
    ("trainer=ddp_cpu trainer.strategy._target_=os.system", "trainer.strategy._target_"),
    ("callbacks.model_checkpoint._target_=builtins.exec", "callbacks.model_checkpoint._target_"),
    ("logger.tensorboard._target_=shutil.rmtree", "logger.tensorboard._target_"),
    ("data._target_=builtins.eval", "data._target_"),
    ("regularization=l2 regularization._target_=os.remove", "regularization._target_"),
    ("dropout=mc dropout._target_=lightningx.Evil", "dropout._target_"),  # a prefix, not a module
    ("+model.extra._target_=builtins.open", "model.extra._target_"),
    ("+evil=builtins.open optimizer._target_=${evil}", "optimizer._target_"),  # interpolated
    ("plugins=[os] optimizer._target_=os.system", "optimizer._target_"),  # stdlib: no plugin
]


@pytest.mark.parametrize(
    ("overrides", "key"), REFUSED_TARGETS, ids=[key for _, key in REFUSED_TARGETS]
)
def test_a_target_outside_the_allowed_modules_is_refused_naming_the_key(make_cfg, overrides, key):
    cfg = make_cfg(*overrides.split())
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert error.value.key == key
    for module in TARGET_MODULES:
        assert module in error.value.message
    assert "+reglab.allow_any_target=true" in error.value.message


GROUP_OPTIONS = [
    f"{group.name}={option.stem}"
    for group in sorted(CONF_DIR.iterdir())
    if group.is_dir() and group.name not in ("hydra", "paths")
    for option in sorted(group.glob("*.yaml"))
    if option.stem != "base"
]


@pytest.mark.parametrize("override", GROUP_OPTIONS)
def test_every_shipped_option_names_only_allowed_targets(make_cfg, override):
    extra = ["data.path=/somewhere"] if override == "data=idx" else []
    check_targets(make_cfg(override, *extra))


def test_a_plugin_module_may_be_named_as_a_target(make_cfg):
    cfg = make_cfg("plugins=[my_lab.optim]", "optimizer._target_=my_lab.optim.Lion")
    check_targets(cfg)
    cfg = make_cfg("plugins=[my_lab.optim]", "optimizer._target_=my_lab.other.Lion")
    with pytest.raises(ConfigError, match="my_lab.optim"):
        check_targets(cfg)


def test_allow_any_target_lifts_the_check(make_cfg):
    cfg = make_cfg("+reglab.allow_any_target=true", "optimizer._target_=builtins.open")
    check_targets(cfg)
    assert allow_any_target(cfg) is True


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+reglab.allow_any_target=1", "reglab.allow_any_target"),
        ("+reglab.typo=true", "reglab.typo"),
    ],
)
def test_the_reglab_node_holds_only_a_boolean_allow_any_target(make_cfg, override, key):
    with pytest.raises(ConfigError) as error:
        allow_any_target(make_cfg(override))
    assert error.value.key == key


def _hydra_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_in_a_hydra_run_only_the_command_line_lifts_the_check():
    given = _hydra_cfg(["+reglab.allow_any_target=true"])
    from_a_file = _hydra_cfg([])
    with open_dict(from_a_file):  # as an experiment file setting it would
        from_a_file.reglab = {"allow_any_target": True}
    try:
        HydraConfig.instance().set_config(given)
        assert allow_any_target(given) is True
        HydraConfig.instance().set_config(from_a_file)
        with pytest.raises(ConfigError) as error:
            allow_any_target(from_a_file)
        assert error.value.key == "reglab.allow_any_target"
    finally:
        HydraConfig.instance().cfg = None


def test_train_py_refuses_a_target_outside_the_allow_list(tmp_path):
    result = run_train_py([*SHORT, "optimizer._target_=builtins.open"], cwd=tmp_path, timeout=600)
    assert result.returncode == 2
    (line,) = _error_lines(result)
    assert line.startswith("reglab: error: optimizer._target_: 'builtins.open' is outside")
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))


# --- keys no code reads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "key"),
    [
        ("+foo=1", "foo"),
        ("+bogusgroup=x", "bogusgroup"),
        ("++foo=1", "foo"),
        ("+foo.bar=1", "foo"),
        ("+optimiser.lr=0.1", "optimiser"),
        ("+bogus/sub=x", "bogus/sub"),
    ],
)
def test_an_append_of_a_key_no_code_reads_is_refused(arg, key):
    (problem,) = unknown_keys([arg], CONF_DIR)
    assert problem.startswith(f"{key}: no config key or group")
    assert "optimizer" in problem and "seed" in problem  # lists what is valid


def test_appends_reglab_reads_are_accepted(tmp_path):
    (tmp_path / "conf" / "mygroup").mkdir(parents=True)
    (tmp_path / "conf" / "mygroup" / "mine.yaml").write_text("x: 1\n")
    argv = [
        "-m",
        "+resume_sweep=outputs/multirun/2024-01-01/00-00-00_train",
        "+reglab.allow_any_target=true",
        "+optimizer.betas=[0.9,0.99]",
        "+experiment=ablation_penalty",
        "+hydra.job.env_set.X=1",
        "++seed=3",
        "+trainer.strategy=auto",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "+mygroup=mine",
        "foo=1",  # without +: Hydra itself refuses an unknown key
    ]
    assert unknown_keys(argv, CONF_DIR) == []
    assert unknown_keys(["--config-dir", str(tmp_path / "conf"), "+mygroup=mine"], CONF_DIR) == []
    assert unknown_keys(["+mygroup=mine"], CONF_DIR) != []


@pytest.mark.parametrize("arg", ["+foo=1", "+bogusgroup=x"])
def test_train_py_refuses_a_typo_key_with_one_line(tmp_path, arg):
    result = run_train_py([*SHORT, arg], cwd=tmp_path, timeout=600)
    assert result.returncode == 2
    (line,) = _error_lines(result)
    assert line.startswith(f"reglab: error: {arg[1:].split('=')[0]}: no config key or group")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()
