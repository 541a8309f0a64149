"""Weight penalties: the maths on bare tensors, and the callback equal to autograd on the loss.

Weight penalties on recurrent and transformer nets: the default selection takes the recurrent
weights, the attention projections and the embedding table, and one callback step equals
autograd on the penalized loss (float64), for L1, L2 and ElasticNet, with SGD and Adam.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from conftest import AutogradPenalty, compose_config, quiet_trainer, run_train_py
from reglab.callbacks import WeightPenalty
from reglab.callbacks.weight_penalty import effective_step
from reglab.data.base import TensorDataModule
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.regularization import (
    PENALTIES,
    ElasticNet,
    Penalty,
    PenaltyGroup,
    make_penalty,
    select_parameters,
)

# --- the maths ------------------------------------------------------------------------------------


def _tensors(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(5, 4, generator=generator, dtype=torch.float64) for _ in range(3)]
    tensors[0][0, 0] = 0.0  # the subgradient at 0 is 0, as autograd's abs
    return tensors


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_value_is_the_textbook_formula(ratio):
    params = _tensors()
    expected = sum(ratio * p.abs().sum() + (1 - ratio) * (p**2).sum() for p in params)
    assert ElasticNet(ratio).value(params).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_gradient_equals_autograd_of_the_penalty(ratio):
    params = [p.requires_grad_() for p in _tensors()]
    strength = 0.7
    (strength * ElasticNet(ratio).value(params)).backward()
    expected = [p.grad.clone() for p in params]
    grads = [torch.zeros_like(p) for p in params]
    ElasticNet(ratio).add_gradient([p.detach() for p in params], grads, strength)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_l2_part_only_when_l1_is_proximal():
    params = _tensors()
    grads = [torch.zeros_like(p) for p in params]
    ElasticNet(0.25).add_gradient(params, grads, 2.0, smooth_only=True)
    for grad, param in zip(grads, params, strict=True):
        torch.testing.assert_close(grad, 2 * 2.0 * 0.75 * param)


def test_proximal_step_soft_thresholds():
    params = _tensors()
    before = [p.clone() for p in params]
    ElasticNet(0.5).proximal_step(params, 0.8)  # shrink by 0.8 * 0.5 = 0.4
    for new, old in zip(params, before, strict=True):
        expected = torch.sign(old) * torch.clamp(old.abs() - 0.4, min=0)
        torch.testing.assert_close(new, expected, rtol=0, atol=1e-15)
        assert ((old.abs() <= 0.4) == (new == 0)).all()


def _one_proximal_step(optimizer_cls, threshold: str, **settings) -> tuple[torch.Tensor, ...]:
    """One optimizer step of w with gradient g, then the callback's proximal L1 step."""
    torch.manual_seed(0)
    weight = torch.randn(6, 5, dtype=torch.float64)
    grad = torch.randn(6, 5, dtype=torch.float64)
    param = weight.clone().requires_grad_(True)
    optimizer = optimizer_cls([param], **settings)
    callback = WeightPenalty(
        kind="l1", strength=0.3, method="proximal", proximal_threshold=threshold
    )
    callback.groups = [PenaltyGroup(strength=0.3, names=["w"], params=[param])]
    optimizer.register_step_post_hook(callback.after_optimizer_step)
    param.grad = grad.clone()
    optimizer.step()
    plain = weight.clone().requires_grad_(True)  # the same step without the penalty
    plain.grad = grad.clone()
    optimizer_cls([plain], **settings).step()
    return param.detach(), plain.detach(), grad


def _soft_threshold(w: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    return torch.sign(w) * torch.clamp(w.abs() - threshold, min=0)


@pytest.mark.parametrize("threshold", ["lr", "adaptive"])
def test_proximal_threshold_with_sgd_is_lr_times_strength(threshold):
    got, plain, _ = _one_proximal_step(torch.optim.SGD, threshold, lr=0.5)
    torch.testing.assert_close(got, _soft_threshold(plain, 0.5 * 0.3), rtol=0, atol=1e-15)


MOMENTUM_SETTINGS = [  # SGD settings and the factor momentum multiplies a steady gradient's step by
    ({"momentum": 0.9}, 10.0),  # 1 / (1 - mu)
    ({"momentum": 0.9, "dampening": 0.5}, 5.0),  # (1 - d) / (1 - mu)
    ({"momentum": 0.8, "nesterov": True}, 5.0),  # (1 - mu d) / (1 - mu) with d = 0
    ({"momentum": 0.5, "dampening": 1.0}, 0.0),  # the buffer never moves
]


@pytest.mark.parametrize(("settings", "factor"), MOMENTUM_SETTINGS)
def test_effective_step_is_torchs_step_on_a_steady_gradient(settings, factor):
    # The reference is torch's SGD itself: after many steps on a constant gradient g the step
    # settles at effective_step * g, so a threshold of effective_step * strength has the lasso
    # at `strength` as its fixed point.
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.5, **settings)
    grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    for _ in range(400):
        before = param.detach().clone()
        param.grad = grad.clone()
        optimizer.step()
    step = (before - param.detach()) / grad
    expected = effective_step(optimizer.param_groups[0])
    assert expected == pytest.approx(0.5 * factor, rel=1e-12)
    torch.testing.assert_close(step, torch.full_like(step, expected), rtol=1e-9, atol=1e-12)


def test_effective_step_formula_for_nesterov_with_dampening_and_without_momentum():
    nesterov = {"lr": 1.0, "momentum": 0.5, "dampening": 0.5, "nesterov": True}
    assert effective_step(nesterov) == pytest.approx((1 - 0.25) / 0.5)
    assert effective_step({"lr": 0.3}) == 0.3  # an optimizer without a momentum setting
    assert effective_step({"lr": 0.3, "momentum": 0, "dampening": 0.9}) == 0.3


@pytest.mark.parametrize("threshold", ["lr", "adaptive"])
@pytest.mark.parametrize(("settings", "factor"), MOMENTUM_SETTINGS)
def test_proximal_threshold_with_momentum_is_strength_times_the_effective_step(
    settings, factor, threshold
):
    got, plain, _ = _one_proximal_step(torch.optim.SGD, threshold, lr=0.5, **settings)
    expected = _soft_threshold(plain, 0.5 * factor * 0.3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)


def test_momentum_of_one_or_more_is_refused_for_the_proximal_method():
    param = torch.zeros(3, 2, requires_grad=True)
    trainer = SimpleNamespace(optimizers=[torch.optim.SGD([param], lr=0.1, momentum=1.0)])
    callback = WeightPenalty(kind="l1", method="proximal")
    with pytest.raises(ConfigError, match="momentum in \\[0, 1\\)") as error:
        callback.on_fit_start(trainer, None)
    assert error.value.key == "method"
    WeightPenalty(kind="l1").on_fit_start(trainer, None)  # the gradient method has no threshold


@pytest.mark.parametrize("optimizer_cls", [torch.optim.Adam, torch.optim.AdamW])
def test_adaptive_proximal_threshold_follows_adams_scaling(optimizer_cls):
    lr, eps = 0.01, 1e-8
    got, plain, grad = _one_proximal_step(optimizer_cls, "adaptive", lr=lr, eps=eps)
    # After Adam's first step the bias-corrected second moment is exactly g^2.
    expected = _soft_threshold(plain, lr * 0.3 / (grad.abs() + eps))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    assert (got == 0).sum() > 0
    fixed, _, _ = _one_proximal_step(optimizer_cls, "lr", lr=lr, eps=eps)
    torch.testing.assert_close(fixed, _soft_threshold(plain, lr * 0.3), rtol=0, atol=1e-15)


def test_proximal_threshold_lr_with_adam_warns_in_the_run_log(caplog):
    param = torch.zeros(3, 2, requires_grad=True)
    trainer = SimpleNamespace(optimizers=[torch.optim.Adam([param], lr=0.01)])
    callback = WeightPenalty(kind="l1", method="proximal", proximal_threshold="lr")
    with caplog.at_level(logging.WARNING, logger="reglab"):
        callback.on_fit_start(trainer, None)
    callback.on_fit_end(trainer, None)
    assert "Adam-type optimizer" in caplog.text and "proximal_threshold=adaptive" in caplog.text


def test_make_penalty_checks_kind_and_ratio():
    assert make_penalty("l1").l1_ratio == 1 and make_penalty("l2").l1_ratio == 0
    assert make_penalty("elastic_net", {"l1_ratio": 0.2}).l1_ratio == 0.2
    with pytest.raises(ConfigError, match="^kind: .*elastic_net, l1, l2") as error:
        make_penalty("l3")
    assert error.value.key == "kind"
    for ratio in (-0.1, 1.5, None):
        with pytest.raises(ConfigError, match="^l1_ratio: ") as error:
            make_penalty("elastic_net", {"l1_ratio": ratio})
        assert error.value.key == "l1_ratio"


def test_the_registry_lists_the_kinds_and_each_follows_the_protocol():
    assert PENALTIES.names() == ["elastic_net", "l1", "l2"]
    for kind in PENALTIES.names():
        penalty = make_penalty(kind, {"l1_ratio": 0.5})
        assert isinstance(penalty, Penalty)
        assert penalty.has_l1_part == (kind != "l2")


def test_options_a_kind_does_not_take_or_left_null_are_ignored():
    # Every regularization option carries every knob, so sweeps over kinds compose.
    assert make_penalty("l1", {"l1_ratio": 0.3, "group_size": 4}).l1_ratio == 1.0
    assert make_penalty("L2", {"l1_ratio": None}).l1_ratio == 0.0
    assert make_penalty("elastic_net", {"l1_ratio": 0.3, "group_size": 4}).l1_ratio == 0.3


# --- parameter selection --------------------------------------------------------------------------

SPEC = {
    "layers": [
        {"linear": {"out_features": 12}},
        "batch_norm1d",
        "tanh",
        {"linear": {"out_features": 12}},
        "relu",
    ]
}


def _module(**kwargs) -> RegLabModule:
    torch.manual_seed(0)
    return RegLabModule(SPEC, [6], 3, **kwargs)


def test_default_selection_is_weights_only():
    (group,) = select_parameters(_module(), 0.1)
    assert group.names == ["net.linear_1.weight", "net.linear_2.weight", "net.head.weight"]


def test_include_exclude_and_per_pattern_strengths():
    module = _module()
    groups = select_parameters(
        module, 0.1, exclude=["net.linear_1.*"], strengths={"net.head.*": 0.5}
    )
    by_strength = {g.strength: g.names for g in groups}
    assert by_strength == {0.1: ["net.linear_2.weight"], 0.5: ["net.head.weight"]}
    (only_biases,) = select_parameters(
        module, 0.1, include=["*.bias"], exclude=["net.batch_norm1d.*"]
    )
    assert only_biases.names == ["net.linear_1.bias", "net.linear_2.bias", "net.head.bias"]
    with pytest.raises(ConfigError, match="^include: selects no parameter"):
        select_parameters(module, 0.1, include=["nothing.*"])


def test_a_selection_of_nothing_is_refused_by_check_and_setup():
    callback = WeightPenalty(kind="l1", include=["nothing.*"])
    for refuse in (
        lambda: callback.check(_module()),
        lambda: callback.setup(quiet_trainer(), _module(), "fit"),
    ):
        with pytest.raises(ConfigError) as error:
            refuse()
        assert error.value.key == "include"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"strength": -1.0}, "strength"),
        ({"kind": "elastic_net", "l1_ratio": 2.0}, "l1_ratio"),
        ({"kind": "elastic_net"}, "l1_ratio"),
        ({"kind": "lasso"}, "kind"),
        ({"method": "newton"}, "method"),
        ({"kind": "l2", "method": "proximal"}, "method"),
        ({"kind": "l1", "proximal_threshold": "per_weight"}, "proximal_threshold"),
        ({"warmup_epochs": -2}, "warmup_epochs"),
        ({"strengths": {"net.head.*": -0.1}}, "strengths.net.head.*"),
    ],
)
def test_bad_values_fail_at_construction(kwargs, key):
    with pytest.raises(ConfigError) as error:
        WeightPenalty(**kwargs)
    assert error.value.key == key


# --- the callback equals autograd on the loss -------------------------------------------------------


class RandomData(TensorDataModule):
    """64 samples, 6 features, 3 classes; fixed order (shuffle off) so runs can be compared."""

    def __init__(self, batch_size: int) -> None:
        super().__init__(batch_size=batch_size, val_fraction=0.1, test_fraction=0.1)

    def load_arrays(self):
        rng = np.random.default_rng(0)
        return rng.standard_normal((80, 6)).astype(np.float32), rng.integers(0, 3, 80)

    def setup(self, stage=None):
        super().setup(stage)
        self._loaders["train"].shuffle = False


OPTIMIZERS = {
    "sgd": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
    "adam": {"_target_": "torch.optim.Adam", "lr": 0.01},
}
SETTINGS = [
    {"kind": "l1", "strength": 0.05},
    {"kind": "l2", "strength": 0.05},
    {"kind": "elastic_net", "strength": 0.05, "l1_ratio": 0.3},
]


def _fit(
    penalty: dict | None,
    reference: bool,
    optimizer: str,
    batch_size: int = 16,
    steps: int = 3,
    spec: dict = SPEC,
    **trainer_kwargs,
) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    common = {"optimizer": OPTIMIZERS[optimizer], "task": "classification"}
    if reference and penalty:
        module = AutogradPenalty(spec, [6], 3, **common, **penalty)
    else:
        module = RegLabModule(spec, [6], 3, **common)
    callbacks = [WeightPenalty(**penalty)] if penalty and not reference else []
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        **{"precision": "64-true", **trainer_kwargs},
    )
    trainer.fit(module, datamodule=RandomData(batch_size))
    return {name: p.detach().double().clone() for name, p in module.named_parameters()}


def _assert_same(got: dict, want: dict, atol: float) -> None:
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("penalty", SETTINGS, ids=lambda p: p["kind"])
def test_callback_step_equals_autograd_penalty_float64(penalty, optimizer):
    got = _fit(penalty, reference=False, optimizer=optimizer)
    want = _fit(penalty, reference=True, optimizer=optimizer)
    _assert_same(got, want, atol=1e-10)
    unpenalized = _fit(None, reference=False, optimizer=optimizer)
    assert not torch.allclose(got["net.head.weight"], unpenalized["net.head.weight"], atol=1e-6)


@pytest.mark.parametrize("penalty", SETTINGS, ids=lambda p: p["kind"])
def test_equal_under_gradient_accumulation(penalty):
    # 4 micro-batches of 4 per optimizer step: the penalty is added once per step, not 4 times.
    got = _fit(penalty, False, "sgd", batch_size=4, steps=2, accumulate_grad_batches=4)
    want = _fit(penalty, True, "sgd", batch_size=4, steps=2, accumulate_grad_batches=4)
    _assert_same(got, want, atol=1e-10)


@pytest.mark.parametrize("penalty", SETTINGS, ids=lambda p: p["kind"])
def test_equal_under_bf16_mixed_precision(penalty):
    # Master weights and unscaled gradients stay float32: only float32 rounding separates the two.
    got = _fit(penalty, False, "adam", precision="bf16-mixed")
    want = _fit(penalty, True, "adam", precision="bf16-mixed")
    _assert_same(got, want, atol=1e-6)
    unpenalized = _fit(None, False, "adam", precision="bf16-mixed")
    assert (got["net.head.weight"] - unpenalized["net.head.weight"]).abs().max() > 1e-3


class SaveWeightsPerRank(L.Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        torch.save(weights, Path(self.folder) / f"rank{trainer.global_rank}.pt")


# BatchNorm statistics are per rank under DDP (without SyncBatchNorm): leave it out here.
SPEC_WITHOUT_BN = {"layers": [layer for layer in SPEC["layers"] if layer != "batch_norm1d"]}


@pytest.mark.slow  # a real subprocess or sweep; CI runs the slow tests
@pytest.mark.parametrize("penalty", [SETTINGS[2]], ids=["elastic_net"])
def test_ddp_two_processes_equal_one_process_on_the_global_batch(tmp_path, penalty):
    torch.manual_seed(0)
    module = RegLabModule(SPEC_WITHOUT_BN, [6], 3, optimizer=OPTIMIZERS["sgd"])
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        precision="64-true",
        callbacks=[WeightPenalty(**penalty), SaveWeightsPerRank(str(tmp_path))],
    )
    trainer.fit(module, datamodule=RandomData(batch_size=8))  # 2 ranks x 8 = global batch 16
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    _assert_same(ranks[1], ranks[0], atol=0.0)
    single = _fit(penalty, reference=True, optimizer="sgd", batch_size=16, spec=SPEC_WITHOUT_BN)
    _assert_same(ranks[0], single, atol=1e-10)


@pytest.mark.parametrize("penalty", SETTINGS, ids=lambda p: p["kind"])
def test_penalty_gradient_is_added_before_clipping(penalty):
    # Lightning clips after on_before_optimizer_step: the clipped gradient includes the penalty,
    # exactly as when the penalty is part of the loss.
    got = _fit(penalty, False, "sgd", gradient_clip_val=0.05)
    want = _fit(penalty, True, "sgd", gradient_clip_val=0.05)
    _assert_same(got, want, atol=1e-10)
    unclipped = _fit(penalty, False, "sgd")
    assert not torch.allclose(got["net.head.weight"], unclipped["net.head.weight"], atol=1e-6)


# Two processes each: the slow set (CI runs it).
@pytest.mark.slow
@pytest.mark.parametrize("penalty", SETTINGS, ids=lambda p: p["kind"])
def test_ddp_cpu_preset_equals_one_process_on_the_global_batch(tmp_path, penalty):
    # As a user types it: trainer=ddp_cpu (2 gloo processes, 16 samples each) against one process
    # on batches of 32. Ranks shard each epoch's permutation alternately, so every global batch is
    # the single run's batch; float64 leaves only summation-order rounding. (20 steps: the odd
    # training set's last batch is padded under DDP, as DistributedSampler pads it.)
    common = [
        "model=mlp",
        "model.dropout=0.0",  # dropout masks would differ between ranks and the single run
        f"regularization={penalty['kind']}",
        f"regularization.strength={penalty['strength']}",
        "regularization.l1_ratio=0.3",
        "optimizer=sgd",
        "trainer.precision=64-true",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",
        "early_stopping=none",
        "print_config=false",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    weights = {}
    for trainer, batch in (("ddp_cpu", 16), ("cpu", 32)):
        run_dir = tmp_path / trainer
        result = run_train_py(
            [
                *common,
                f"trainer={trainer}",
                f"data.batch_size={batch}",
                f"paths.output_dir={run_dir}",
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        weights[trainer] = {k: v for k, v in state.items() if k.startswith("net.")}
    _assert_same(weights["ddp_cpu"], weights["cpu"], atol=1e-10)


# --- sequence nets --------------------------------------------------------------------------------

STEPS, FEATURES, VOCAB, TOKENS = 4, 3, 7, 6
LSTM_SPEC = {"layers": [{"lstm": {"hidden_size": 5, "num_layers": 2, "dropout": 0.0}}]}
GRU_SPEC = {"layers": [{"gru": {"hidden_size": 5, "num_layers": 2, "output": "mean"}}]}
TRANSFORMER_SPEC = {
    "layers": [
        {"embedding": {"embedding_dim": 8}},
        {"positional_encoding": {"kind": "learned"}},
        {
            "transformer_encoder": {
                "nhead": 2,
                "num_layers": 1,
                "dim_feedforward": 16,
                "dropout": 0.0,
            }
        },
        {"sequence_pool": {"mode": "mean"}},
    ]
}
NETS = {
    "lstm": (LSTM_SPEC, "sequence"),
    "gru": (GRU_SPEC, "sequence"),
    "transformer": (TRANSFORMER_SPEC, "tokens"),
}
SEQUENCE_OPTIMIZERS = {
    "sgd_momentum": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
    "sgd_nesterov": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "adam": {"_target_": "torch.optim.Adam", "lr": 0.01},
    "adamw": {"_target_": "torch.optim.AdamW", "lr": 0.01},
}
SEQUENCE_PENALTIES = [
    {"kind": "l1", "strength": 0.05},
    {"kind": "l2", "strength": 0.05},
    {"kind": "elastic_net", "strength": 0.05, "l1_ratio": 0.3},
]


class RandomSequences(TensorDataModule):
    """80 random float sequences (4 steps x 3 features) or token sequences (6 tokens of 7), 3
    classes; a fixed order (shuffle off) so that two runs see the same batches."""

    def __init__(self, layout: str) -> None:
        super().__init__(batch_size=16, val_fraction=0.1, test_fraction=0.1, standardize=False)
        self.layout = layout

    @property
    def vocab_size(self) -> int | None:
        return VOCAB if self.layout == "tokens" else None

    def load_arrays(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 3, 80)
        if self.layout == "tokens":
            return rng.integers(0, VOCAB, (80, TOKENS)), labels
        return rng.standard_normal((80, STEPS, FEATURES)).astype(np.float32), labels

    def setup(self, stage=None):
        super().setup(stage)
        self._loaders["train"].shuffle = False


def _sequence_module(net: str, optimizer: str, penalty: dict | None = None) -> RegLabModule:
    spec, layout = NETS[net]
    data = RandomSequences(layout)
    arguments = {
        "model": spec,
        "input_shape": list(data.input_shape),
        "num_outputs": 3,
        "optimizer": SEQUENCE_OPTIMIZERS[optimizer],
        "input_dtype": "int64" if layout == "tokens" else "float32",
        "vocab_size": data.vocab_size,
    }
    if penalty:
        return AutogradPenalty(**arguments, **penalty)
    return RegLabModule(**arguments)


def _fit_sequence(
    net: str, optimizer: str, penalty: dict, reference: bool
) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = _sequence_module(net, optimizer, penalty if reference else None)
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[] if reference else [WeightPenalty(**penalty)],
        accelerator="cpu",
        devices=1,
        precision="64-true",
    )
    trainer.fit(module, datamodule=RandomSequences(NETS[net][1]))
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_the_default_selection_takes_recurrent_attention_and_embedding_weights():
    lstm_names = {
        n for g in select_parameters(_sequence_module("lstm", "adam"), 0.1) for n in g.names
    }
    assert {
        f"net.lstm.rnn.weight_{kind}_l{layer}" for kind in ("ih", "hh") for layer in (0, 1)
    } <= (lstm_names)
    assert not any("bias" in name for name in lstm_names)
    names = {
        n for g in select_parameters(_sequence_module("transformer", "adam"), 0.1) for n in g.names
    }
    assert any(name.endswith("embedding.weight") for name in names)
    assert any(name.endswith("self_attn.in_proj_weight") for name in names)
    assert any(name.endswith("self_attn.out_proj.weight") for name in names)
    assert not any("norm" in name or "bias" in name for name in names)


# ElasticNet (both parts) with every optimizer on every net; L1 and L2 alone with Adam.
CASES = [
    *(
        (net, SEQUENCE_PENALTIES[2], optimizer)
        for net in sorted(NETS)
        for optimizer in sorted(SEQUENCE_OPTIMIZERS)
    ),
    *(
        (net, penalty, "adam")
        for net in ("lstm", "transformer")
        for penalty in SEQUENCE_PENALTIES[:2]
    ),
]


@pytest.mark.parametrize(
    ("net", "penalty", "optimizer"),
    CASES,
    ids=[f"{net}-{penalty['kind']}-{optimizer}" for net, penalty, optimizer in CASES],
)
def test_callback_step_equals_autograd_penalty_float64_on_sequence_nets(net, penalty, optimizer):
    got = _fit_sequence(net, optimizer, penalty, reference=False)
    want = _fit_sequence(net, optimizer, penalty, reference=True)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-10, msg=name)


def test_an_exclude_pattern_keeps_the_embedding_table_unpenalized(tmp_path):
    cfg = compose_config(
        [
            "model=transformer_net",
            "data.layout=tokens",
            "regularization=l2",
            "regularization.exclude=[net.embedding.*]",
        ],
        tmp_path,
    )
    module = _sequence_module("transformer", "adam")
    names = {
        n
        for g in select_parameters(module, 0.1, exclude=list(cfg.regularization.exclude))
        for n in g.names
    }
    assert names and not any("embedding" in name for name in names)
