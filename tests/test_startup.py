"""A fast start: `--help`, `--cfg`, `--info` and a config typo answer without torch or Lightning.

Asserted by the modules a command imports (`PYTHONPROFILEIMPORTTIME`, as `python -X importtime`),
not by timing it. The name tables that make this possible (reglab.names) are checked against the
registries they stand for, so they cannot drift.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from lightning.pytorch.strategies import StrategyRegistry
from torch import nn

from conftest import CONF_DIR, ROOT, run_train_py
from reglab import names
from reglab.cli import list_help_groups_from_one_repository
from reglab.errors import ConfigError
from reglab.nn import LAYER_KINDS, LAYERS, check_knobs, layer_names, register_layer

HEAVY = ("torch", "lightning", "lightning_fabric", "pytorch_lightning", "kornia", "sklearn")
# `import time:  self | cumulative | <indent>module`, one line per module imported.
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(?P<module>[\w.]+)$")
RELUX = (
    "reglab: error: model.activation: unknown value 'relux'; valid: elu, gelu, hardtanh, "
    "leaky_relu, log_sigmoid, log_softmax, mish, prelu, relu, relu6, selu, sigmoid, silu, "
    "softmax, softmax2d, softplus, swish, tanh, none"
)


def heavy_imports(stderr: str) -> list[str]:
    """The torch / Lightning / kornia / scikit-learn modules an importtime log shows."""
    imported = [m["module"] for m in map(IMPORT_LINE.match, stderr.splitlines()) if m]
    return [module for module in imported if module.split(".")[0] in HEAVY]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("reglab: error:")]


@pytest.mark.parametrize(
    ("args", "returncode", "error"),
    [
        (["--help"], 0, None),
        (["--cfg", "job"], 0, None),
        (["--info"], 0, None),
        (["model=mlp", "model.activation=relux", "trainer.max_epochs=1"], 2, RELUX),
        (
            ["model=cnn", "model.norm=relu"],
            2,
            "reglab: error: model.norm: unknown value 'relu'; valid: batch_norm1d, batch_norm2d, "
            "batch_norm3d, group_norm, instance_norm2d, layer_norm, none",
        ),
        (
            ["model=mlp", "model.dropout=1.0"],
            2,
            "reglab: error: model.dropout: must be a number in [0, 1), got 1.0",
        ),
        (
            ["trainer.max_epochs=0"],
            2,
            "reglab: error: trainer.max_epochs: must be an integer >= 1 (or -1: no limit), got 0",
        ),
        (
            ["trainer.strategy=ddp_spawn", "trainer.devices=0"],  # a strategy of the table
            2,
            "reglab: error: trainer.devices: must be auto, -1 (all), a count >= 1 or a list of "
            "device ids, got 0",
        ),
        (["model=transformer"], 2, None),  # reglab.cli, before Hydra
    ],
    ids=["help", "cfg", "info", "activation", "norm", "dropout", "trainer", "strategy", "option"],
)
def test_answers_without_importing_torch_or_lightning(tmp_path, args, returncode, error):
    result = run_train_py(args, cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == returncode, result.stderr[-3000:]
    assert "import time:" in result.stderr  # the log is there: an empty list means something
    assert heavy_imports(result.stderr) == []
    if error is not None:
        assert errors(result.stderr) == [error]


def test_eval_help_imports_neither_torch_nor_lightning(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "eval.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ckpt_path" in result.stdout
    assert heavy_imports(result.stderr) == []


def test_help_lists_every_config_group():
    result = run_train_py(["--help"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    groups = result.stdout.partition("== Configuration groups ==")[2].partition("== Config ==")[0]
    listed = dict(line.split(": ", 1) for line in groups.splitlines() if ": " in line)
    for group in ("model", "data", "regularization", "dropout", "experiment"):
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem != "base")
        assert listed[group] == ", ".join(options)
    assert (CONF_DIR / "data" / "base.yaml").exists()  # shared keys, not an option: not listed


def test_one_repository_lists_what_hydra_lists(monkeypatch):
    from hydra import initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra

    # An in-process help command earlier in this worker may have left the hook in place.
    hydras_own = getattr(ConfigLoaderImpl.get_group_options, "__wrapped__", None)
    hydras_own = hydras_own or ConfigLoaderImpl.get_group_options
    # The patch is for a help command's process; restore Hydra's method after this test.
    monkeypatch.setattr(ConfigLoaderImpl, "get_group_options", hydras_own)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        hydra_listing = hydra.format_config_groups(lambda group: True)
        list_help_groups_from_one_repository(["model=mlp"])  # not a help command: unchanged
        assert ConfigLoaderImpl.get_group_options is hydras_own
        list_help_groups_from_one_repository(["--help"])
        assert ConfigLoaderImpl.get_group_options is not hydras_own
        # The same listing, less the groups' shared keys files (`base`), which are no options.
        without_base = re.sub(r"\bbase(, )?", "", hydra_listing)
        assert hydra.format_config_groups(lambda group: True) == without_base
    assert "regularization: base, " in hydra_listing and not re.search(r"\bbase\b", without_base)
    assert "model: cnn, conv3d" in hydra_listing and "hydra/launcher: " in hydra_listing


def test_another_hydra_release_lists_help_groups_its_own_way(monkeypatch):
    # The help hook replaces a private Hydra method: only on the releases it was checked with.
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from reglab import cli

    hydras_own = ConfigLoaderImpl.get_group_options
    monkeypatch.setattr(ConfigLoaderImpl, "get_group_options", hydras_own)
    monkeypatch.setattr(cli, "hydra_version", lambda: "1.4.0")
    list_help_groups_from_one_repository(["--help"])
    assert ConfigLoaderImpl.get_group_options is hydras_own
    monkeypatch.setattr(cli, "hydra_version", lambda: "1.3.8")
    list_help_groups_from_one_repository(["--help"])
    assert ConfigLoaderImpl.get_group_options is not hydras_own  # monkeypatch restores it


def test_builtin_layer_table_is_the_registry():
    # reglab.names copies the built-in layers' names so that the checks before a run need no
    # torch: a layer added to (or removed from) reglab.nn must be added to (or removed from)
    # names.BUILTIN_LAYERS too, under its kind, in sorted order.
    import reglab.run  # noqa: F401 - everything a run imports has registered its layers

    registered = {kind: tuple(layer_names(kind)) for kind in LAYER_KINDS}
    differences = [
        f"{kind}: add {sorted(set(found) - set(listed))}, remove {sorted(set(listed) - set(found))}"
        for kind in LAYER_KINDS
        if (found := registered[kind]) != (listed := names.BUILTIN_LAYERS.get(kind, ()))
    ]
    assert registered == names.BUILTIN_LAYERS, (
        "reglab.nn's layers (nn/catalogue.py, activations.py, gated.py, sequence.py) and the "
        "torch-free copy of their names differ: edit BUILTIN_LAYERS in src/reglab/names.py ("
        + "; ".join(differences or ["its kinds"])
        + ")"
    )


def test_strategy_table_names_lightning_strategies():
    # A listed name is accepted without Lightning: each must be one Lightning knows. (Lightning's
    # names missing here are still accepted: they are looked up in its registry.)
    assert set(names.LIGHTNING_STRATEGIES) <= set(StrategyRegistry)
    assert names.strategy_names("bogus") == ["auto", *StrategyRegistry]


@pytest.mark.parametrize(
    "spec",
    [
        {"activation": "relux"},
        {"activation": "RELU", "norm": "LayerNorm"},
        {"activation": {"swish": {"learnable": True}}, "norm": "none"},
        {"activation": {"relux": {}}},
        {"activation": "batch_norm1d"},  # a layer of another kind
        {"norm": "relu"},
        {"norm": ["layer_norm"]},
        {"activation": 3},
        {"activation": None, "norm": "null"},
        {"dropout": 1.0},
        {"dropout": "0.1"},
        {"width": 0},
        {"depth": -1},
        {"width": 64, "depth": 0, "dropout": 0.5},
    ],
)
def test_knob_check_without_torch_says_what_the_builder_says(spec):
    assert _outcome(names.check_knobs, spec) == _outcome(check_knobs, spec)


def test_layers_a_plugin_registers_are_valid_knob_values():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    register_layer("square_test", Square, kind="activation")
    try:
        names.check_knobs({"activation": "square_test"})
        assert "square_test" in names.layer_names("activation")
    finally:
        LAYERS.unregister("square_test")


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_a_sweep_job_with_a_bad_value_is_recorded_as_failed(tmp_path):
    # In a multirun the early check stays out of the way: the job fails, the sweep goes on.
    result = run_train_py(["-m", "model=mlp", "model.activation=relux"], cwd=tmp_path)
    assert "reglab sweep: 0 ok, 1 failed" in result.stdout, result.stderr[-3000:]
    (record,) = (tmp_path / "outputs" / "multirun").rglob("metrics.json")
    failed = json.loads(record.read_text())
    assert failed["status"] == "failed"
    assert failed["error"] == RELUX.removeprefix("reglab: error: ")


def _outcome(check, spec):
    try:
        check(spec)
    except ConfigError as error:
        return str(error)
    return "ok"
