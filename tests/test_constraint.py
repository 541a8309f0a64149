"""The max-norm constraint (`constraint=max_norm`): Keras's formula as the outside reference, the
units and dims it acts on, its knobs' checks, and runs where every step ends inside the ball."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from conftest import read_metrics, run_train_py
from reglab.callbacks import WeightConstraint
from reglab.errors import ConfigError
from reglab.regularization import CONSTRAINTS, MaxNorm, make_constraint
from reglab.run import run_one, train

KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def keras_max_norm(w: np.ndarray, max_value: float, axis: tuple[int, ...]) -> np.ndarray:
    """keras.constraints.MaxNorm.__call__ (keras/src/constraints/constraints.py), in NumPy."""
    norms = np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))
    desired = np.clip(norms, 0, max_value)
    return w * (desired / (KERAS_EPSILON + norms))


def _weights(shape: tuple[int, ...], unit_dim: int = 0) -> torch.Tensor:
    """Float64 weights whose units (along `unit_dim`) have norms 0.5 to 4: half in a ball of 2."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dims = tuple(d for d in range(len(shape)) if d != unit_dim)
    units = shape[unit_dim]
    wanted = torch.linspace(0.5, 4.0, units, dtype=torch.float64)
    view = [units if d == unit_dim else 1 for d in range(len(shape))]
    return w / torch.linalg.vector_norm(w, dim=dims, keepdim=True) * wanted.reshape(view)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((6, 5), (1,)), ((8, 3, 3, 3), (1, 2, 3)), ((4, 2, 5), (1, 2))],
    ids=["linear", "conv2d", "conv1d"],
)
def test_max_norm_is_keras_formula_outside_the_ball_and_leaves_units_inside(shape, axis):
    w = _weights(shape)
    projected = w.clone()
    constraint = MaxNorm(max_value=2.0)
    dims = constraint.reduce_dims(shape, 0)
    assert dims == axis  # default: every dim but the units'
    moved = constraint.project(projected, dims)
    reference = torch.from_numpy(keras_max_norm(w.numpy(), 2.0, axis))
    norms = torch.linalg.vector_norm(w, dim=axis)
    outside = norms > 2.0
    assert moved.item() == outside.sum().item() == shape[0] // 2
    assert torch.allclose(projected[outside], reference[outside], rtol=1e-12, atol=0)
    assert torch.equal(projected[~outside], w[~outside])  # bit for bit
    # Keras rescales the units inside too, by ||w|| / (eps + ||w||): a change of eps / ||w|| only.
    assert torch.allclose(projected[~outside], reference[~outside], rtol=KERAS_EPSILON / 0.5)
    assert torch.linalg.vector_norm(projected, dim=axis).max().item() <= 2.0
    # torch's own max-norm (torch.renorm, as nn.Embedding's max_norm) agrees as well.
    assert torch.allclose(projected, torch.renorm(w, 2, 0, 2.0), rtol=1e-12, atol=0)


def test_axis_is_kerass_axis_in_torchs_layout():
    """Keras's Dense kernel is [in, out] with axis=0; torch's Linear weight is [out, in]: axis=1."""
    w = _weights((6, 5))
    keras_kernel = w.numpy().T
    expected = keras_max_norm(keras_kernel, 1.5, (0,)).T
    for axis in (1, [1], -1, None):
        projected = w.clone()
        constraint = make_constraint("max_norm", {"max_value": 1.5, "axis": axis})
        constraint.project(projected, constraint.reduce_dims(w.shape, 0))
        outside = w.norm(dim=1) > 1.5
        assert torch.allclose(projected[outside], torch.from_numpy(expected)[outside], rtol=1e-12)
    # axis=0 in torch's layout bounds each input's outgoing weights instead: another projection.
    projected = w.clone()
    MaxNorm(1.5, axis=0).project(projected, MaxNorm(1.5, axis=0).reduce_dims(w.shape, 0))
    assert torch.allclose(projected, torch.renorm(w, 2, 1, 1.5), rtol=1e-12)


def test_the_default_weights_are_linear_and_conv_weights_with_their_units():
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3),  # [out, in, kh, kw]: units along 0
        nn.BatchNorm2d(4),
        nn.ConvTranspose2d(4, 3, 2),  # [in, out, kh, kw]: units along 1
        nn.Flatten(),
        nn.LazyLinear(5),
        nn.Linear(5, 2),
    )
    net(torch.zeros(1, 2, 6, 6))  # materializes the lazy layer
    targets = {t.name: (t.dims, t.units) for t in WeightConstraint().select(net)}
    assert targets == {
        "0.weight": ((1, 2, 3), 4),
        "2.weight": ((0, 2, 3), 3),
        "4.weight": ((1,), 5),
        "5.weight": ((1,), 2),
    }  # no bias, no BatchNorm parameter
    chosen = WeightConstraint(include=["*.weight"], exclude=["1.*", "5.*"]).select(net)
    assert [t.name for t in chosen] == ["0.weight", "2.weight", "4.weight"]
    net[5].weight.requires_grad_(False)  # frozen weights are left alone
    assert "5.weight" not in {t.name for t in WeightConstraint().select(net)}


def test_an_lstm_is_constrained_through_include_one_gate_unit_per_row():
    lstm = nn.LSTM(3, 4)
    with pytest.raises(ConfigError, match="Linear or convolution") as error:
        WeightConstraint().check(lstm)
    assert error.value.key == ""
    targets = WeightConstraint(include=["weight_*"]).select(lstm)
    assert {t.name: t.units for t in targets} == {"weight_ih_l0": 16, "weight_hh_l0": 16}


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"max_value": 0}, "max_value"),
        ({"max_value": -1.0}, "max_value"),
        ({"max_value": float("nan")}, "max_value"),
        ({"max_value": "3"}, "max_value"),
        ({"axis": "1"}, "axis"),
        ({"axis": []}, "axis"),
        ({"axis": [1.5]}, "axis"),
        ({"axis": True}, "axis"),
        ({"kind": "min_norm"}, "kind"),
        ({"include": "net.0.weight"}, "include"),
        ({"exclude": [1]}, "exclude"),
    ],
)
def test_bad_knobs_are_refused_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError) as error:
        WeightConstraint(**kwargs)
    assert error.value.key == key
    assert CONSTRAINTS.names() == ["max_norm"]


@pytest.mark.parametrize(
    ("kwargs", "key", "text"),
    [
        ({"axis": 2}, "axis", "out of range"),
        ({"axis": [1, -1]}, "axis", "twice"),
        ({"include": ["0.bias"]}, "include", "two dims"),
        ({"include": ["nothing.*"]}, "include", "selects no parameter"),
    ],
)
def test_settings_that_do_not_fit_the_model_are_refused_before_training(kwargs, key, text):
    with pytest.raises(ConfigError, match=text) as error:
        WeightConstraint(**kwargs).check(nn.Sequential(nn.Linear(3, 2)))
    assert error.value.key == key


class NormWatch(L.Callback):
    """Records, after every optimizer step, the largest unit norm of every Linear weight."""

    def __init__(self) -> None:
        self.initial = 0.0
        self.after_steps: list[float] = []

    @staticmethod
    def largest(pl_module: L.LightningModule) -> float:
        linears = [m for m in pl_module.modules() if isinstance(m, nn.Linear)]
        return max(m.weight.detach().norm(dim=1).max().item() for m in linears)

    def on_train_start(self, trainer, pl_module):
        self.initial = self.largest(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_steps.append(self.largest(pl_module))


def test_a_run_ends_every_step_with_every_unit_inside_the_ball(make_cfg, tmp_path):
    watch = NormWatch()
    cfg = make_cfg(
        "model=mlp",
        "model.width=16",
        "constraint=max_norm",
        "constraint.max_value=0.6",
        "regularization=l2",  # composes with a penalty
        "optimizer.lr=0.01",
        "trainer.max_epochs=2",
        "logger=none",
    )
    run_one(cfg, extra_callbacks=[watch])
    assert watch.initial > 0.6  # the initial weights are outside: the bound below is the control's
    assert len(watch.after_steps) == 2 * 17  # 1077 digits, batch 64
    assert max(watch.after_steps) <= 0.6 * (1 + 1e-6)
    final = read_metrics(tmp_path / "run")["final"]
    assert 0 < final["constraint/clipped_fraction"] <= 1
    assert final["reg/penalty"] > 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("constraint.max_value=0", "constraint.max_value"),
        ("constraint.axis=5", "constraint.axis"),
        ("constraint.kind=unit_norm", "constraint.kind"),
        ("constraint.include=net.0.weight", "constraint.include"),
    ],
)
def test_bad_values_in_a_run_name_the_key(make_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", "model.width=16", "constraint=max_norm", override))
    assert error.value.key == key
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_constraint_none_builds_nothing_and_takes_the_shared_knobs(make_cfg):
    cfg = make_cfg("constraint=none", "constraint.max_value=2.0", "constraint.axis=[1]")
    assert "_target_" not in cfg.constraint and cfg.constraint.max_value == 2.0
    assert make_cfg("constraint=max_norm").constraint.max_value == 3.0


class NonNegative:
    """A toy kind from outside the tree: every weight >= 0 (Keras's NonNeg)."""

    def reduce_dims(self, shape, unit_dim):
        return ()  # one unit per weight

    def project(self, param, dims):
        moved = (param < 0).sum()
        param.clamp_(min=0.0)
        return moved


def test_a_constraint_kind_registered_from_outside_the_tree_runs(make_cfg, tmp_path, register):
    register(CONSTRAINTS, "non_negative", NonNegative)
    cfg = make_cfg(
        "model=mlp",
        "model.width=16",
        "constraint=max_norm",
        "constraint.kind=non_negative",  # max_norm's knobs (max_value, axis) are not its
        "trainer.max_epochs=1",
        "logger=none",
    )
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    state = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    linears = [v for k, v in state.items() if k.startswith("net.") and k.endswith("weight")]
    assert linears and all((v >= 0).all() for v in linears if v.ndim == 2)
    assert 0 < metrics["final"]["constraint/clipped_fraction"] < 1
    with pytest.raises(ConfigError, match="non_negative"):
        make_constraint("unknown")  # the message lists the registered kinds


@pytest.mark.slow  # a subprocess: several seconds
def test_train_py_prints_one_line_naming_the_knob_and_exits_2(tmp_path):
    result = run_train_py(["constraint=max_norm", "constraint.max_value=-1"], tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("reglab:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reglab: error: constraint.max_value: "), result.stderr
    assert "Traceback" not in result.stderr
