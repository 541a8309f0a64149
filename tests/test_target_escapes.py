"""A `_target_` whose text starts with an allowed module but reaches another module's object
through module attributes (issue 19: `reglab.module.torch.save` wrote a file outside outputs/,
`reglab.sweep.os.system` passed the check): refused with one line naming the key, exit 2,
before anything runs, on the command line and in a config file alike. And a config file with a
YAML tag that builds a Python object (`!!python/object/apply:os.system`) is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, SMALL_RUN, option_folder, run_train_in_process, run_train_py
from reglab.config import check_targets
from reglab.errors import ConfigError
from reglab.run import run_one

KEY = "callbacks.pwn._target_"


def _escapes(path: Path) -> list[tuple[list[str], str]]:
    """(overrides, what the target reaches) for each escape; each would write `path`."""
    return [
        (
            [f"+{KEY}=reglab.module.torch.save", f"+callbacks.pwn._args_=[x,{path}]"],
            "reaches a function of torch.serialization",
        ),
        (
            [f"+{KEY}=reglab.sweep.os.system", f"+callbacks.pwn._args_=['touch {path}']"],
            "reaches a built-in function",
        ),
        (
            [
                f"+{KEY}=lightning.pytorch.trainer.trainer.os.system",
                f"+callbacks.pwn._args_=['touch {path}']",
            ],
            "reaches a built-in function",
        ),
        (
            [f"+{KEY}=reglab.records.Path.write_text", f"+callbacks.pwn._args_=[{path},x]"],
            "reaches a function of pathlib",
        ),
    ]


ESCAPE_IDS = ["torch.save", "reglab.sweep.os.system", "lightning...os.system", "Path.write_text"]


@pytest.mark.parametrize("case", range(4), ids=ESCAPE_IDS)
def test_an_attribute_chain_escape_is_refused_naming_the_key(make_cfg, tmp_path, case):
    target = tmp_path / "written"
    overrides, reached = _escapes(target)[case]
    cfg = make_cfg(*SMALL_RUN, "trainer.max_epochs=1", *overrides)
    with pytest.raises(ConfigError) as error:
        run_one(cfg)
    assert error.value.key == KEY
    assert reached in str(error.value) and "+reglab.allow_any_target=true" in str(error.value)
    assert not target.exists()


@pytest.mark.parametrize("case", range(4), ids=ESCAPE_IDS)
def test_train_py_refuses_an_escape_with_one_line_and_exit_2(tmp_path, capsys, case):
    target = tmp_path / "written"
    overrides, reached = _escapes(target)[case]
    code = run_train_in_process([*SMALL_RUN, "trainer.max_epochs=1", *overrides], tmp_path)
    assert code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line.startswith(f"reglab: error: {KEY}: ") and reached in line
    assert not target.exists()


@pytest.mark.parametrize(
    ("override", "reached"),
    [
        ("optimizer._target_=reglab.optim.torch.load", "reaches a function of torch.serialization"),
        ("optimizer._target_=reglab.optim.torch", "reaches a module (torch)"),
        ("scheduler=step", None),  # a shipped option: allowed
        ("optimizer._target_=reglab.optim.torch.optim.SGD", None),  # a class of torch.optim
    ],
)
def test_the_optimizer_target_goes_through_the_same_check(make_cfg, override, reached):
    cfg = make_cfg(override)
    if reached is None:
        check_targets(cfg)
        return
    with pytest.raises(ConfigError) as error:
        check_targets(cfg)
    assert error.value.key == "optimizer._target_" and reached in str(error.value)


def test_an_escape_in_a_users_config_file_is_refused(make_cfg, tmp_path):
    searchpath = option_folder(
        tmp_path,
        "callbacks",
        "mine",
        "shell:\n  _target_: reglab.sweep.os.system\n  _args_: ['touch /tmp/x']\n",
    )
    cfg = make_cfg("callbacks=mine", searchpath)
    with pytest.raises(ConfigError) as error:
        check_targets(cfg)
    assert error.value.key == "callbacks.shell._target_"


def test_allow_any_target_still_lifts_the_check(make_cfg):
    check_targets(make_cfg("+reglab.allow_any_target=true", f"+{KEY}=reglab.sweep.os.system"))


@pytest.mark.slow  # a real subprocess; CI runs the slow tests
def test_train_py_subprocess_refuses_torch_save_through_reglab_module(tmp_path):
    target = tmp_path / "written"
    args = [f"+{KEY}=reglab.module.torch.save", f"+callbacks.pwn._args_=[x,{target}]"]
    result = run_train_py([*SMALL_RUN, "trainer.max_epochs=1", *args], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"reglab: error: {KEY}: 'reglab.module.torch.save' reaches a function")
    assert not target.exists()


# A YAML tag that builds a Python object, in a config file a user adds: one line naming the file
# (it gave a raw ConstructorError traceback from Hydra's loader).
PAYLOAD = 'shell: !!python/object/apply:os.system ["touch {path}"]\n'


def _tagged_folder(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    folder = tmp_path / "conf"
    (folder / "callbacks").mkdir(parents=True)
    (folder / "callbacks" / "evil.yaml").write_text(PAYLOAD.format(path=marker))
    return folder, marker


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_python_tag_in_a_users_config_file_is_refused_in_one_line(tmp_path, capsys, how):
    from reglab.cli import exit_on_bad_command_line

    folder, marker = _tagged_folder(tmp_path)
    given = (
        [f"--config-dir={folder}"]
        if how == "--config-dir"
        else [f"hydra.searchpath=[file://{folder}]"]
    )
    with pytest.raises(SystemExit) as exit_:
        exit_on_bad_command_line(ROOT / "conf", [*given, "callbacks=evil"])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"reglab: error: {folder / 'callbacks' / 'evil.yaml'}: line 1: ")
    assert "Python tags (!!python/object/apply:os.system) are not allowed" in line
    assert not marker.exists()


def test_train_py_refuses_a_python_tag_in_a_config_file(tmp_path):
    folder, marker = _tagged_folder(tmp_path)
    result = run_train_py(["--config-dir", str(folder), "callbacks=evil"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert "evil.yaml: line 1: Python tags" in line and "Traceback" not in result.stderr
    assert not marker.exists()
