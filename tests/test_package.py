"""reglab as an installed package: the configs ship inside it (conf/ as `reglab.conf`), and the
console commands `reglab-train`, `reglab-eval` and `reglab-report` work from any folder, writing
`outputs/` there.

The slow test builds the wheel, installs it (not editable) into a fresh virtualenv and runs the
three commands in an empty folder, as a new user would.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import CONF_DIR, ROOT
from reglab.cli import APPENDABLE_KEYS, known_keys
from reglab.entry.launch import conf_dir
from reglab.entry.train import command_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

COMMANDS = ("reglab-train", "reglab-eval", "reglab-report")
BIN = Path(sys.executable).parent  # this virtualenv's scripts


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def command(name: str, args: list[str], cwd: Path, bin_dir: Path = BIN, timeout: int = 300):
    """`<name> <args>` as a user types it in `cwd`, with the scripts of `bin_dir`."""
    script = bin_dir / name
    assert script.is_file(), f"no {script}: reinstall reglab (pip install -e .) for its scripts"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("reglab: error:")]


# --- the configs and the commands of the package ------------------------------------------------


def test_the_commands_are_declared_and_resolve_to_functions():
    declared = scripts()
    assert set(COMMANDS) <= set(declared)
    for name in COMMANDS:
        module, _, function = declared[name].partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_the_configs_are_found_through_the_package():
    # In a clone (editable install) the package's configs are the top-level conf/, not a copy.
    assert conf_dir() == CONF_DIR.resolve()
    assert {"train.yaml", "eval.yaml"} <= {p.name for p in conf_dir().glob("*.yaml")}


def test_help_and_a_bad_key_answer_from_an_empty_folder(tmp_path):
    helped = command("reglab-train", ["--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "== Configuration groups ==" in helped.stdout
    assert "model: " in helped.stdout and "selu_net" in helped.stdout
    typo = command("reglab-train", ["trainer.max_epoch=3"], tmp_path)
    assert typo.returncode == 2
    assert errors(typo.stderr) == [
        "reglab: error: trainer.max_epoch: no such key; did you mean trainer.max_epochs?"
    ]
    bad = command("reglab-eval", ["ckpt_path=x", "model=nope"], tmp_path)
    assert bad.returncode == 2
    assert errors(bad.stderr)[0].startswith("reglab: error: model: unknown option 'nope'")
    assert list(tmp_path.iterdir()) == []  # no outputs/ for help or a refused command


def test_a_users_config_folder_joins_the_packaged_configs(tmp_path):
    own = tmp_path / "my_conf" / "model"
    own.mkdir(parents=True)
    (own / "tiny.yaml").write_text("defaults:\n  - mlp\n  - _self_\nwidth: 8\n")
    shown = command(
        "reglab-train", ["--config-dir", "my_conf", "model=tiny", "--cfg", "job"], tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert "  width: 8\n  depth: 2\n" in shown.stdout  # mlp's keys, with the user's width
    typo = command("reglab-train", ["--config-dir", "my_conf", "model=tinny"], tmp_path)
    assert typo.returncode == 2
    assert "tiny" in errors(typo.stderr)[0]


def test_a_sweep_experiment_without_m_names_the_command_the_user_typed(tmp_path):
    refused = command("reglab-train", ["experiment=ablation_penalty"], tmp_path)
    assert refused.returncode == 2
    (line,) = errors(refused.stderr)
    assert line.endswith("run it with -m: reglab-train -m experiment=ablation_penalty")


@pytest.mark.parametrize(
    ("argv0", "shown"),
    [
        ("/work/clone/train.py", "python train.py"),
        ("train.py", "python train.py"),
        ("/home/me/.venv/bin/reglab-train", "reglab-train"),
    ],
)
def test_command_name(argv0, shown):
    assert command_name(argv0) == shown


# --- a wheel in a fresh virtualenv ----------------------------------------------------------------


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the sources (setuptools' build/ stays out of the clone)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            wheels,
            source,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("reglab-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A virtualenv with `wheel` installed (not editable); its dependencies are this venv's.

    The wheel is installed first, then a .pth file adds this venv's site-packages for torch and
    the rest: a path a .pth adds is not scanned for .pth files, so this venv's editable reglab
    (its __editable__ .pth) stays out of sight.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", python]
        + ["install", "-q", "--no-deps", "--no-index", wheel],
        check=True,
        capture_output=True,
    )
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (Path(site) / "reglab_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_trains_evaluates_and_reports_in_any_folder(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    yamls = {f"reglab/conf/{p.relative_to(CONF_DIR)}" for p in CONF_DIR.rglob("*.yaml")}
    assert yamls <= names, sorted(yamls - names)
    assert "reglab/conf/experiment/ablation_penalty.yaml" in names
    assert "hydra_plugins/reglab_sweeper/__init__.py" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        declared = archive.read(entry_points).decode()
    assert all(f"{name} = " in declared for name in COMMANDS)

    venv = fresh_venv(tmp_path, wheel)
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import reglab.conf; print(reglab.conf.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the wheel's reglab, not this clone's

    empty = tmp_path / "empty"
    empty.mkdir()
    quiet = ["trainer.enable_progress_bar=false", "print_config=false", "logger=none"]
    trained = command(
        "reglab-train", ["model=selu_net", "trainer.max_epochs=1", *quiet], empty, venv / "bin"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (metrics,) = (empty / "outputs" / "runs").glob("*/*/metrics.json")
    run_dir = metrics.parent
    assert (run_dir / "train.log").is_file()

    tested = command(
        "reglab-eval",
        [f"ckpt_path={run_dir}", "trainer.enable_progress_bar=false"],
        empty,
        venv / "bin",
    )
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert list((empty / "outputs" / "eval").glob("*/*/eval_metrics.json"))

    swept = command(
        "reglab-train",
        ["-m", "model=mlp", "model.width=16", "trainer.max_epochs=1", "seed=0,1", *quiet],
        empty,
        venv / "bin",
    )
    assert swept.returncode == 0, swept.stderr[-3000:]
    (sweep_dir,) = (empty / "outputs" / "multirun").glob("*/*")
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 2
    reported = command("reglab-report", [str(sweep_dir)], empty, venv / "bin")
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert (sweep_dir / "report.md").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["outputs"]


def test_pythons_cache_in_the_config_folder_is_no_group(tmp_path):
    # Importing reglab.conf writes conf/__pycache__ (a wheel's install compiles it too).
    for folder in ("model", "__pycache__"):
        (tmp_path / folder).mkdir()
    (tmp_path / "train.yaml").write_text("seed: 1\n")
    assert known_keys([tmp_path]) == {"model", "seed", *APPENDABLE_KEYS}
