"""Configs stay data: `task_name` stays a folder name, `_target_` names only allowed modules, and a
`+key` no code reads (a typo) is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from conftest import CONF_DIR, QUIET, run_train_in_process, run_train_py
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
        ("+bogus/sub=x", "bogus/sub"),
    ],
)
def test_an_append_of_a_key_no_code_reads_is_refused(arg, key):
    (problem,) = unknown_keys([arg], CONF_DIR)
    assert problem.startswith(f"{key}: no config key or group")
    assert "optimizer" in problem and "seed" in problem  # lists what is valid


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        (
            "+optimiser.lr=0.1",
            "optimiser: no config key or group of that name (a typo?); did you mean optimizer?",
        ),
        (
            "+regularization.strenght=1e-3",
            "regularization.strenght: no option of regularization "
            "has this key; did you mean regularization.strength?",
        ),
        (
            "+dropout.pp=0.5",
            "dropout.pp: no option of dropout has this key; did you mean dropout.p?",
        ),
        (
            "++data.batchsize=8",
            "data.batchsize: no option of data has this key; did you mean data.batch_size?",
        ),
        (
            "+early_stopping.patiense=3",
            "early_stopping.patiense: no option of early_stopping has "
            "this key; did you mean early_stopping.patience?",
        ),
        (
            "+augmentation.mixx=null",
            "augmentation.mixx: no option of augmentation has this key; "
            "did you mean augmentation.mix?",
        ),
        (
            "+batchnorm.switch=3",
            "batchnorm.switch: no option of batchnorm has this key; "
            "did you mean batchnorm.switch_epoch?",
        ),
    ],
)
def test_a_misspelled_append_names_the_closest_key(arg, expected):
    assert unknown_keys([arg], CONF_DIR) == [expected]


def test_appends_of_keys_some_option_of_the_group_sets_are_accepted():
    # Which option takes them is the constructor's check; the typo check only needs the union.
    argv = ["+data.val_fraction=0.3", "+regularization.l1_ratio=0.5", "+dropout.samples=5"]
    assert unknown_keys(argv, CONF_DIR) == []


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


# --- command-line typos: one line before anything is built (in-process train.py) ---------------

# (arguments, the line's key, a fragment of the line). Hydra would print its own multi-line error
# (exit 1) for the misspelled keys and its lexer's for `~`; `+` appends of keys nothing reads
# trained. Each answers before torch is imported.
COMMAND_LINE_TYPOS = [
    (["trainer.max_epoch=3"], "trainer.max_epoch", "did you mean trainer.max_epochs?"),
    (
        ["regularization.strenght=1e-3"],
        "regularization.strenght",
        "did you mean regularization.strength?",
    ),
    (["regularisation=l2"], "regularisation", "did you mean regularization?"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch", "did you mean trainer.max_epochs?"),
    (["+trainer.gpus=1"], "trainer.gpus", "Lightning's Trainer"),
    (
        ["model=selu_net", "model.activation="],
        "model.activation",
        "valid: depth, dropout, init, layers, width",
    ),
    (["model=mlp", "model.activation="], "model.activation", "unknown value ''; valid: elu"),
    (["data=idx", "data.path=~/mnist"], "data.path", """'data.path="~/mnist"'"""),
    (["ckpt_path=~/runs/x"], "ckpt_path", "$HOME/runs/x"),
    (["hydra.run.dir=~/out"], "hydra.run.dir", "inside quotes"),
    (["+model.foo=1"], "model.foo", "nothing reads this key"),
    (["model=mlp", "+model.drop_path=0.1"], "model.drop_path", "did you mean model.dropout?"),
    (
        ["+regularization.strenght=1e-3"],
        "regularization.strenght",
        "did you mean regularization.strength?",
    ),
    (["+trainer.max_epochs=3"], "trainer.max_epochs", "drop the '+'"),
    (["data.batchsize=8"], "data.batchsize", "did you mean data.batch_size?"),
    (["model=mlp", "model.widht=64"], "model.widht", "did you mean model.width?"),
    (["seeed=1"], "seeed", "did you mean seed?"),
    (["modle=mlp"], "modle", "did you mean model?"),
    (
        ["early_stopping.patiance=3"],
        "early_stopping.patiance",
        "did you mean early_stopping.patience?",
    ),
    (
        ["callbacks.model_checkpoint.save_topk=2"],
        "callbacks.model_checkpoint.save_topk",
        "save_top_k?",
    ),
    (["scheduler.step_size=3"], "scheduler.step_size", "scheduler is empty in this option"),
    (
        ["optimizer.learning_rate=0.1"],
        "optimizer.learning_rate",
        "valid: _target_, lr, weight_decay",
    ),
    (["optimizer.lr=0"], "optimizer.lr", "(0, inf], got 0"),
    (["+dropout.p=0.5"], "dropout.p", "this dropout option builds nothing"),
]


@pytest.mark.parametrize(
    ("args", "key", "fragment"),
    COMMAND_LINE_TYPOS,
    ids=[" ".join(r[0]) for r in COMMAND_LINE_TYPOS],
)
def test_a_command_line_typo_gets_one_line_naming_the_key(tmp_path, capsys, args, key, fragment):
    code = run_train_in_process([*SHORT, *args], tmp_path)
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    (line,) = _stderr_errors(stderr)
    assert line.startswith(f"reglab: error: {key}: ") and fragment in line, line
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr
    assert not list(tmp_path.rglob("metrics.json"))


def _stderr_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("reglab: error:")]


def test_the_composition_hook_is_removed_after_the_run():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import ConfigCompositionException

    from reglab.cli import one_line_composition_errors

    hydras_own = ConfigLoaderImpl.__dict__["_apply_overrides_to_config"]
    with one_line_composition_errors():
        assert ConfigLoaderImpl.__dict__["_apply_overrides_to_config"] is not hydras_own
    assert ConfigLoaderImpl.__dict__["_apply_overrides_to_config"] is hydras_own
    with pytest.raises(ConfigCompositionException):  # compose() outside it: Hydra's error
        _hydra_cfg(["trainer.max_epoch=3"])


def test_the_composition_hook_is_gated_on_the_hydra_releases_it_was_checked_with(monkeypatch):
    # A private Hydra method is wrapped: on another Hydra release it is left alone.
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from reglab import cli

    assert cli.hydra_is_tested("1.3.2") and cli.hydra_is_tested("1.3.8")
    assert not cli.hydra_is_tested("1.4.0") and not cli.hydra_is_tested("1.2.0")
    hydras_own = ConfigLoaderImpl.__dict__["_apply_overrides_to_config"]
    monkeypatch.setattr(cli, "hydra_version", lambda: "1.4.0")
    with cli.one_line_composition_errors():
        assert ConfigLoaderImpl.__dict__["_apply_overrides_to_config"] is hydras_own


def test_a_quoted_tilde_path_is_the_home_folder(make_cfg):
    # README: data=idx 'data.path="~/mnist"' (Hydra's grammar needs the quotes).
    from reglab.run import train

    cfg = make_cfg("model=mlp", "data=idx", 'data.path="~/reglab-no-such-mnist"')
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert error.value.key == "data.path"
    assert str(Path.home() / "reglab-no-such-mnist") in error.value.message


def test_the_trainer_argument_table_is_lightnings():
    import inspect

    import lightning as L

    from reglab.names import TRAINER_ARGUMENTS

    taken = [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]
    assert list(TRAINER_ARGUMENTS) == taken


@pytest.mark.parametrize("override", GROUP_OPTIONS)
def test_every_shipped_option_passes_the_key_checks(make_cfg, override):
    # No shipped model has a key nothing reads, no shipped trainer an argument Lightning lacks.
    extra = ["data.path=/somewhere"] if override == "data=idx" else []
    cfg = make_cfg(override, *extra)
    try:
        validate(cfg)
    except ConfigError as error:  # trainer=gpu, ddp on a machine without one
        assert error.key == "trainer.accelerator", error
