"""Shared fixtures: compose the real configs in-process, run `train.py` as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from reglab.module import RegLabModule
from reglab.registry import Registry
from reglab.regularization import make_penalty

# One test process per core (pytest -n auto): each process, and the `python train.py` it starts,
# computes on one thread, or the processes would fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
QUIET = ["print_config=false", "trainer.enable_progress_bar=false"]


def compose_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would run, writing into `output_dir`."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[*QUIET, f"paths.output_dir={output_dir}", *overrides],
        )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose a config whose outputs go under tmp_path/run."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(overrides, tmp_path / "run")

    return make


@pytest.fixture
def trials(monkeypatch: pytest.MonkeyPatch) -> list[DictConfig]:
    """Optuna search trials end at once with objective = the drawn lr (the study machinery is
    under test, not training); the list collects their configs.

    The stand-in replaces `reglab.run.run_one`, the trial runner the command hands to the search
    (`run_search(cfg, run_trial=run_one)`)."""
    configs = []

    def fake_run_one(cfg: DictConfig, extra_callbacks: list | None = None, **_: Any) -> float:
        configs.append(cfg)
        return float(cfg.optimizer.lr)

    monkeypatch.setattr("reglab.run.run_one", fake_run_one)
    return configs


def read_metrics(run_dir: Path) -> dict:
    """The metrics.json of a finished run."""
    return json.loads((run_dir / "metrics.json").read_text())


def run_train_py(
    args: Sequence[str], cwd: Path, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python train.py <args>` in a subprocess, as a user types it."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_train_py(args: Sequence[str], cwd: Path) -> subprocess.Popen:
    """`python train.py <args>` started in a subprocess (to signal or kill it), as from a terminal."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test process started in the background (`.ci/run &`) ignores
        # SIGINT, and its children would inherit that.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Trainer without logger, checkpoints, progress bar or summary, for focused tests."""
    quiet = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**quiet, **kwargs})


def run_entry_in_process(script: str, args: Sequence[str], cwd: Path) -> int:
    """`python <script> <args>` (train.py, eval.py) inside this process (so entries registered
    by a test are seen). Returns the exit code (0 when main returned). Hydra's global state is
    cleared afterwards so later in-process compositions start clean.
    """
    import importlib.util

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    spec = importlib.util.spec_from_file_location(
        f"reglab_entry_{Path(script).stem}", ROOT / script
    )
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    saved_argv, saved_cwd = sys.argv, Path.cwd()
    sys.argv = [str(ROOT / script), "--config-path", str(CONF_DIR), *args]
    os.chdir(cwd)
    try:
        entry.run()
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None


def run_train_in_process(args: Sequence[str], cwd: Path) -> int:
    """`python train.py <args>` inside this process (see run_entry_in_process)."""
    return run_entry_in_process("train.py", args, cwd)


# Arguments that keep an in-process test run small and quiet: a 16-wide MLP, nothing printed.
SMALL_RUN = [
    "model=mlp",
    "model.width=16",
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
]


def option_folder(root: Path, group: str, option: str, text: str) -> str:
    """Write one option's YAML into a config folder of the test's own; return the searchpath override.

    Hydra then finds `group=option` there as well as in conf/, as for a user's own config folder.
    """
    path = root / "conf" / group / f"{option}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return f"hydra.searchpath=[file://{root / 'conf'}]"


@pytest.fixture
def conf_dir(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The searchpath override of a config folder holding only the test module's new option.

    The module names it: `OPTION = (group, option, yaml_text)`.
    """
    return option_folder(tmp_path, *request.module.OPTION)


@pytest.fixture
def register() -> Iterator[Callable[[Registry, str, Any], Any]]:
    """`register(REGISTRY, name, entry)`: a toy entry for this test, unregistered afterwards."""
    added: list[tuple[Registry, str]] = []

    def add(registry: Registry, name: str, entry: Any) -> Any:
        registry.register(name, entry)
        added.append((registry, name))
        return entry

    yield add
    for registry, name in reversed(added):
        registry.unregister(name)


@pytest.fixture(scope="module")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder made by train.py (.hydra/, metrics.json, checkpoints/), shared by the
    module's tests; the module's `TRAIN` holds the overrides."""
    cwd = tmp_path_factory.mktemp("train")
    assert run_train_in_process(request.module.TRAIN, cwd) == 0
    (found,) = (cwd / "outputs" / "runs").glob("*/*")
    return found


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for the module's tests: with small matrices or one batch a step, two
    threads fighting for this shared machine's cores make each step several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_records(folder: Path) -> list[dict]:
    """Every metrics.json under `folder`/outputs (runs and sweep jobs), in path order."""
    return [json.loads(p.read_text()) for p in sorted((folder / "outputs").rglob("metrics.json"))]


class AutogradPenalty(RegLabModule):
    """The reference for a penalty callback: strength * R(weights with ndim > 1) added to the
    training loss and differentiated by autograd."""

    def __init__(self, *args, kind: str, strength: float, l1_ratio=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference_penalty = make_penalty(kind, {"l1_ratio": l1_ratio})
        self.reference_strength = strength

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        weights = [p for p in self.net.parameters() if p.ndim > 1]
        return loss + self.reference_strength * self.reference_penalty.value(weights)
