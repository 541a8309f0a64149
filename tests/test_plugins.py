"""`plugins=[module]`: a user's own file registers a layer and a penalty kind, as a user runs it.

The plugin lives outside reglab (a folder on PYTHONPATH), its YAML in a config folder of the
user's own (`hydra.searchpath`); `python train.py` runs in a subprocess, so the registration
happens only through `plugins` — in the run and in every job of a sweep.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import run_train_py

QUIET = [
    "print_config=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks=none",
    "early_stopping=none",
    "model=mlp",
    "model.width=16",
    "trainer.max_epochs=1",
]

PLUGIN = textwrap.dedent(
    '''
    """A user's own layer and penalty kind."""
    import torch
    from torch import nn

    from reglab.nn import layer
    from reglab.regularization import PENALTIES, L1

    CALLS = []


    @layer("scaled_tanh", kind="activation")
    class ScaledTanh(nn.Module):
        def __init__(self, scale: float = 2.0):
            super().__init__()
            self.scale = scale

        def forward(self, x):
            return self.scale * x.tanh()


    @PENALTIES.register("half_l1")
    class HalfL1(L1):
        """L1 at half strength: R = sum|w| / 2."""

        def value(self, params):
            return super().value(params) / 2

        def add_gradient(self, params, grads, strength, smooth_only=False):
            super().add_gradient(params, grads, strength / 2, smooth_only)

        def proximal_step(self, params, threshold):
            super().proximal_step(params, threshold / 2)
    '''
)


def _user_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "my_lab").mkdir()
    (tmp_path / "my_lab" / "__init__.py").write_text("")
    (tmp_path / "my_lab" / "extras.py").write_text(PLUGIN)
    conf = tmp_path / "my_conf" / "regularization"
    conf.mkdir(parents=True)
    (conf / "half_l1.yaml").write_text(
        "defaults: [base]\n_target_: reglab.callbacks.WeightPenalty\nkind: half_l1\n"
    )
    return {"PYTHONPATH": str(tmp_path)}


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
def test_a_plugin_module_registers_a_layer_and_a_penalty_for_a_sweep(tmp_path):
    env = _user_files(tmp_path)
    result = run_train_py(
        [
            "-m",
            "plugins=[my_lab.extras]",
            f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
            "model.activation={scaled_tanh: {scale: 3.0}}",
            "regularization=l1,half_l1",
            "regularization.strength=1e-3",
            *QUIET,
        ],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reglab sweep: 2 ok, 0 failed, 0 skipped" in result.stdout
    records = [json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")]
    assert all(r["status"] == "ok" for r in records)
    penalties = {
        next(o for o in r["overrides"] if o.startswith("regularization=")): r["final"]
        for r in records
    }
    # The same weights' L1 norm, half the penalty: the plugin's kind really ran.
    half, full = penalties["regularization=half_l1"], penalties["regularization=l1"]
    assert half["reg/penalty"] / half["reg/l1_norm"] == pytest.approx(1e-3 / 2, rel=1e-5)
    assert full["reg/penalty"] / full["reg/l1_norm"] == pytest.approx(1e-3, rel=1e-5)


def test_a_plugin_that_cannot_be_imported_is_one_clear_error(tmp_path):
    result = run_train_py(["plugins=[no_such_lab.extras]", *QUIET], cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("reglab: error:")]
    assert errors and "plugins[0]" in errors[0] and "no_such_lab" in errors[0], result.stderr
    assert not list(tmp_path.rglob("metrics.json"))
