"""Stacked nets (reglab.stack, issue 21): K member nets of one spec computed as one module.

Float64 throughout: for every layer family and every shipped model config, the stacked forward
equals each member's forward (train mode without dropout, and eval mode), the gradients of the sum
of the members' losses equal each member's own, BatchNorm keeps each member's running statistics,
dropout draws each member's own masks at its own rate, and a member's state dict goes in and out
under the member's own keys. A net with a layer that has no stacked form names it.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF_DIR
from reglab.nn import LAYERS, LayerEntry, build_net
from reglab.nn.activations import Swish
from reglab.nn.drop_path import DropPath
from reglab.nn.gated import GatedLinear
from reglab.nn.modes import dropout_carriers, set_dropout_p
from reglab.nn.residual import Residual
from reglab.nn.sequence import GRU, LSTM, PositionalEncoding, SequencePool
from reglab.stack import STACKERS, NotStackable, StackedNet, stack_modules, stack_nets
from reglab.stack.layers import type_key

K = 3
BATCH = 4
TOL = 1e-10


def members(make, k: int = K, vary: bool = True) -> list[nn.Module]:
    """K nets from `make`, member i built after torch.manual_seed(i), in float64; with `vary`,
    every parameter and running statistic is also moved off its default (norm layers start at
    ones and zeros, which would hide members mixed up)."""
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        net = make().double()
        if vary:
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.3 * torch.randn_like(p))
                for name, b in net.named_buffers():
                    if name.endswith("running_var"):
                        b.copy_(0.5 + torch.rand_like(b))
                    elif name.endswith("running_mean"):
                        b.copy_(torch.randn_like(b))
        nets.append(net)
    return nets


def inputs(shape: tuple[int, ...], vocab: int | None = None) -> torch.Tensor:
    """A different batch for every member: [K, BATCH, *shape]."""
    torch.manual_seed(100)
    if vocab is not None:
        return torch.randint(0, vocab, (K, BATCH, *shape))
    return torch.randn(K, BATCH, *shape, dtype=torch.float64)


def loss_of(out: torch.Tensor) -> torch.Tensor:
    """A loss that weighs every output differently."""
    weights = torch.linspace(0.5, 1.5, out[0].numel(), dtype=out.dtype).reshape(out.shape[1:])
    return (out.square() * weights).sum() / out.shape[0] + out.sum()


def assert_same_forward(nets, stacked, x, mode: str) -> None:
    for net in nets:
        net.train(mode == "train")
    stacked.train(mode == "train")
    out = stacked(x)
    for k, net in enumerate(nets):
        assert torch.allclose(out[k], net(x[k]), rtol=0, atol=TOL), f"member {k}, {mode}"


def assert_same_gradients(nets, stacked, x) -> None:
    """Gradients of the members' summed losses: each parameter's and each input's (float inputs)."""
    for net in [*nets, stacked]:
        net.train()
        net.zero_grad()
    float_inputs = x.is_floating_point()
    x = x.clone().requires_grad_(float_inputs)
    out = stacked(x)
    sum(loss_of(out[k : k + 1]) for k in range(len(nets))).backward()
    grads = dict(stacked.member_parameters())
    for k, net in enumerate(nets):
        own_x = x[k].detach().clone().requires_grad_(float_inputs)
        loss_of(net(own_x).unsqueeze(0)).backward()
        if float_inputs:
            assert torch.allclose(x.grad[k], own_x.grad, rtol=0, atol=TOL), (k, "input")
        for name, p in net.named_parameters():
            assert torch.allclose(grads[name].grad[k], p.grad, rtol=0, atol=TOL), (k, name)


def check_equivalence(make, shape, vocab=None) -> StackedNet:
    nets = members(make)
    for net in nets:  # dropout off: the outputs must match exactly
        set_dropout_p(net, 0.0)
    stacked = stack_nets(nets)
    x = inputs(shape, vocab)
    assert_same_forward(nets, stacked, x, "train")
    assert_same_forward(nets, stacked, x, "eval")
    assert_same_gradients(nets, stacked, x)
    return stacked


# --- layer families ------------------------------------------------------------------------------

ACTIVATIONS = sorted(LAYERS.names(where=lambda e: e.kind == "activation"))


def _activation(name: str) -> nn.Module:
    cls = LAYERS.get(name).cls
    if cls in (nn.Softmax, nn.LogSoftmax):
        return cls(dim=1)  # a positive dim: it means the member's dim 1, not the member dim
    if cls is Swish:
        return Swish(beta=1.5, learnable=True)
    return cls()


FAMILIES = {
    "linear": (
        lambda: nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3, bias=False)),
        (7,),
    ),
    "linear_on_sequences": (lambda: nn.Sequential(nn.Linear(4, 5), nn.GELU()), (3, 4)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(4, 6, 3, stride=2, groups=2), nn.ReLU()), (4, 9)),
    "conv2d": (
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
            nn.Conv2d(4, 4, 3, padding="same", dilation=2, groups=4, bias=False),
        ),
        (2, 7, 7),
    ),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 3, 2, stride=(1, 2, 1))), (2, 4, 5, 4)),
    "conv_transpose2d": (
        lambda: nn.Sequential(nn.ConvTranspose2d(4, 2, 3, stride=2, groups=2, output_padding=1)),
        (4, 5, 5),
    ),
    "batch_norm1d": (lambda: nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)), (5,)),
    "batch_norm1d_on_steps": (lambda: nn.Sequential(nn.BatchNorm1d(4, momentum=None)), (4, 5)),
    "batch_norm2d": (lambda: nn.Sequential(nn.BatchNorm2d(3)), (3, 4, 4)),
    "batch_norm3d": (lambda: nn.Sequential(nn.BatchNorm3d(2, affine=False)), (2, 3, 3, 3)),
    "instance_norm2d": (
        lambda: nn.Sequential(nn.InstanceNorm2d(3, affine=True, track_running_stats=True)),
        (3, 4, 4),
    ),
    "group_norm": (lambda: nn.Sequential(nn.GroupNorm(2, 4)), (4, 3, 3)),
    "layer_norm": (lambda: nn.Sequential(nn.LayerNorm([3, 4, 4])), (3, 4, 4)),
    "layer_norm_no_bias": (lambda: nn.Sequential(nn.LayerNorm(6, bias=False)), (6,)),
    "prelu_per_channel": (lambda: nn.Sequential(nn.PReLU(3)), (3, 4, 4)),
    "swish_fixed_beta": (lambda: nn.Sequential(Swish(beta=2.0)), (5,)),
    "pooling": (
        lambda: nn.Sequential(
            nn.MaxPool2d(2), nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        ),
        (2, 8, 8),
    ),
    "pooling3d": (
        lambda: nn.Sequential(nn.MaxPool3d(2), nn.AdaptiveAvgPool3d(1), nn.Flatten()),
        (2, 4, 4, 4),
    ),
    "upsample_softmax2d": (
        lambda: nn.Sequential(nn.Upsample(scale_factor=2), nn.Softmax2d()),
        (3, 2, 2),
    ),
    "flatten_part": (lambda: nn.Sequential(nn.Flatten(1, 2), nn.Linear(4, 2)), (2, 3, 4)),
    "sequence_pool": (lambda: nn.Sequential(SequencePool("max"), nn.Identity()), (5, 3)),
    "dropouts_at_zero": (
        lambda: nn.Sequential(
            nn.Dropout(0.3), nn.AlphaDropout(0.2), nn.FeatureAlphaDropout(0.1), nn.Dropout1d(0.2)
        ),
        (3, 4),
    ),
    "residual": (
        lambda: nn.Sequential(
            Residual(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), nn.Linear(4, 6, bias=False), 0.2)
        ),
        (4,),
    ),
    "residual_conv": (
        lambda: nn.Sequential(
            Residual(
                nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)), nn.Conv2d(2, 3, 1)
            )
        ),
        (2, 4, 4),
    ),
    "lstm_bidirectional_last": (
        lambda: nn.Sequential(LSTM(4, 5, num_layers=2, bidirectional=True, output="last")),
        (6, 4),
    ),
    "lstm_sequence_no_bias": (
        lambda: nn.Sequential(LSTM(4, 3, bias=False, output="sequence")),
        (5, 4),
    ),
    "gru_bidirectional_max": (
        lambda: nn.Sequential(GRU(4, 5, num_layers=2, bidirectional=True, output="max")),
        (6, 4),
    ),
    "gru_mean": (lambda: nn.Sequential(GRU(4, 5, output="mean")), (6, 4)),
    "gated": (lambda: nn.Sequential(GatedLinear(5, 3), GatedLinear(3, 2)), (5,)),
    "gated_on_steps": (lambda: nn.Sequential(GatedLinear(5, 3)), (4, 5)),
    **{
        f"activation_{name}": (lambda name=name: nn.Sequential(_activation(name)), (3, 4, 4))
        for name in ACTIVATIONS
    },
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_layer_family_computes_every_member_exactly(family):
    make, shape = FAMILIES[family]
    check_equivalence(make, shape)


def test_embeddings_look_each_member_up_in_its_own_table():
    def make():
        return nn.Sequential(
            nn.Embedding(7, 4, padding_idx=0), PositionalEncoding(5, 4), SequencePool("mean")
        )

    stacked = check_equivalence(make, (5,), vocab=7)
    with pytest.raises(IndexError):
        stacked(torch.full((K, 2, 5), 7))


# --- the shipped model configs -------------------------------------------------------------------

# Each config with the data it is meant for: (input shape, build_net's keywords, outputs, knobs
# set smaller so that a member builds in milliseconds; the layers are the config's own).
SMALL_WRN = {"blocks": 1, "widths": [4, 8, 8]}
MODEL_DATA = {
    "cnn": ((1, 8, 8), {}, 10, {"channels": 4}),
    "conv3d": ((1, 4, 4, 4), {}, 3, {"channels": 4}),
    "conv_autoencoder": ((1, 8, 8), {"output_shape": (1, 8, 8)}, 64, {"channels": 4}),
    "fit_tanh": ((1,), {}, 1, {}),
    "gated": ((64,), {}, 10, {"width": 16}),
    "gru_net": ((8, 8), {}, 10, {"width": 8}),
    "lstm_net": ((8, 8), {}, 10, {"width": 8}),
    "mlp": ((64,), {}, 10, {"width": 16}),
    "preact_resnet18": ((3, 4, 4), {}, 10, {"blocks": 1}),  # slow: 512 channels
    "relu_bn_net": ((64,), {}, 10, {"width": 16}),
    "resnet": ((1, 8, 8), {}, 10, {"channels": 4}),
    "selu_net": ((64,), {}, 10, {"width": 16}),
    "transformer_net": (
        (16,),
        {"input_dtype": torch.int64, "vocab_size": 17},
        10,
        {"width": 16, "heads": 2},
    ),
    "wide_resnet": ((3, 8, 8), {}, 10, SMALL_WRN),
    "wrn_16_4": ((3, 8, 8), {}, 10, SMALL_WRN),
    "wrn_28_10": ((3, 8, 8), {}, 10, SMALL_WRN),
}
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
# Configs whose channel counts are fixed (no knob) take long in float64: the slow suite.
LARGE = {"preact_resnet18"}
STACKABLE = [pytest.param(m, marks=pytest.mark.slow) if m in LARGE else m for m in MODELS]


def model_spec(name: str, knobs: dict | None = None) -> dict:
    """conf/model/<name>.yaml as Hydra composes it (its `defaults` first, then `knobs` as
    overrides), interpolations resolved."""
    raw = OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml")
    for base in raw.pop("defaults", []):
        raw = OmegaConf.merge(OmegaConf.load(Path(CONF_DIR) / "model" / f"{base}.yaml"), raw)
    raw = OmegaConf.merge(raw, knobs or {})
    return OmegaConf.to_container(OmegaConf.create({"model": raw}), resolve=True)["model"]


def model_members(name: str) -> tuple[list[nn.Module], tuple[int, ...], int | None]:
    assert name in MODEL_DATA, f"give conf/model/{name}.yaml its data in MODEL_DATA"
    shape, extra, outputs, knobs = MODEL_DATA[name]
    nets = members(lambda: build_net(model_spec(name, knobs), shape, outputs, **extra), vary=False)
    return nets, shape, extra.get("vocab_size")


def test_every_model_config_is_covered():
    assert set(MODELS) <= set(MODEL_DATA), "give each config its data in MODEL_DATA"


def test_every_catalogue_layer_has_a_stacked_form():
    missing = [n for n in LAYERS.names() if STACKERS.find(type_key(LAYERS.get(n).cls)) is None]
    assert missing == []


@pytest.mark.parametrize("name", STACKABLE)
def test_a_model_config_stacks_exactly(name):
    shape, extra, outputs, knobs = MODEL_DATA[name]
    spec = model_spec(name, knobs)
    make = lambda: build_net(spec, shape, outputs, **extra)  # noqa: E731
    stacked = check_equivalence(make, shape, extra.get("vocab_size"))
    assert stacked.num_members == K


@pytest.mark.parametrize(
    "name", [m for m in ("cnn", "gated", "relu_bn_net", "wide_resnet") if m in MODELS]
)
def test_batchnorm_keeps_each_members_running_statistics(name):
    nets, shape, _ = model_members(name)
    for net in nets:
        set_dropout_p(net, 0.0)
    stacked = stack_nets(nets)
    optimizers = [torch.optim.SGD(net.parameters(), lr=1e-3) for net in [*nets, stacked]]
    for step in range(3):
        x = inputs(shape) + step
        for k, net in enumerate(nets):
            loss_of(net(x[k]).unsqueeze(0)).backward()
        out = stacked(x)  # one forward: each moves the running statistics
        sum(loss_of(out[k : k + 1]) for k in range(K)).backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    stats = [n for n, _ in nets[0].named_buffers() if "running" in n or "batches" in n]
    assert stats
    for k, net in enumerate(nets):
        own = net.state_dict()
        for key, value in stacked.state_dict().items():
            assert torch.allclose(value[k].double(), own[key].double(), rtol=0, atol=1e-9), (k, key)
    assert not torch.equal(stacked.state_dict()[stats[0]][0], stacked.state_dict()[stats[0]][1])


def test_a_net_with_a_layer_without_stacked_form_names_it(register):
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    register(LAYERS, "square", LayerEntry("square", Square, kind="activation"))
    spec = model_spec("mlp", {"activation": "square", "width": 4})
    nets = [build_net(spec, (6,), 2) for _ in range(2)]
    with pytest.raises(NotStackable) as error:
        stack_nets(nets)
    assert str(error.value) == (
        "block_1.square (test_stack_net.test_a_net_with_a_layer_without_stacked_form_names_it."
        "<locals>.Square) has no stacked form"
    )


def test_unstackable_layers_and_differing_members_are_named():
    with pytest.raises(NotStackable, match=r"^lstm \(nn\.LSTM\) has no stacked form$"):
        stack_nets([nn.Sequential(OrderedDict(lstm=nn.LSTM(3, 4)))] * 2)
    attention = nn.Sequential(nn.MultiheadAttention(4, 2))
    with pytest.raises(NotStackable, match=r"^0 \(nn\.MultiheadAttention\) has no stacked form$"):
        stack_nets([attention, attention])
    slopes = [nn.Sequential(nn.Linear(2, 2), nn.LeakyReLU(s)) for s in (0.1, 0.2)]
    with pytest.raises(NotStackable, match=r"^1 \(nn\.LeakyReLU\) differs across members"):
        stack_nets(slopes)
    widths = [nn.Sequential(nn.Linear(2, w)) for w in (3, 4)]
    with pytest.raises(NotStackable, match=r"^0 \(nn\.Linear\) differs across members"):
        stack_nets(widths)
    with pytest.raises(NotStackable, match="is a nn.ReLU in one member, nn.Tanh"):
        stack_nets([nn.Sequential(nn.ReLU()), nn.Sequential(nn.Tanh())])


# --- member state -----------------------------------------------------------------------------------


def test_member_parameters_are_the_stored_tensors_under_the_members_names():
    nets, _, _ = model_members("resnet")
    stacked = stack_nets(nets)
    named = stacked.member_parameters()
    assert [n for n, _ in named] == [n for n, _ in nets[0].named_parameters()]
    stored = {id(p) for p in stacked.parameters()}
    for name, param in named:
        assert id(param) in stored and param.is_leaf
        for k, net in enumerate(nets):
            own = net.get_parameter(name)
            assert param[k].shape == own.shape and torch.equal(param[k], own)


def test_a_members_state_dict_round_trips_through_a_plain_net():
    nets, shape, _ = model_members("cnn")
    stacked = stack_nets(nets)
    with torch.no_grad():
        for p in stacked.parameters():  # the stacked net trained a little
            p.mul_(1.1)
    x = inputs(shape)
    stacked.eval()
    out = stacked(x)
    spec = model_spec("cnn", MODEL_DATA["cnn"][3])
    fresh = members(lambda: build_net(spec, shape, 10), k=1, vary=False)[0].eval()
    state = stacked.member_state_dict(1)
    assert set(state) == set(fresh.state_dict())
    fresh.load_state_dict(state, strict=True)
    assert torch.allclose(fresh(x[1]), out[1], rtol=0, atol=TOL)
    assert all(t.untyped_storage().nbytes() <= t.numel() * t.element_size() for t in state.values())

    stacked.load_member_state_dict(0, nets[2].state_dict())
    assert torch.allclose(stacked(x)[0], nets[2].eval()(x[0]), rtol=0, atol=TOL)
    assert torch.allclose(stacked(x)[1], out[1], rtol=0, atol=TOL)  # the others untouched
    with pytest.raises(KeyError, match="missing keys"):
        stacked.load_member_state_dict(0, {"head.weight": state["head.weight"]})
    with pytest.raises(IndexError, match="member 3 out of range"):
        stacked.member_state_dict(3)


# --- dropout --------------------------------------------------------------------------------------

# Each dropout kind with the shape of one sample: channel dropout reads some shapes as unbatched.
DROPOUTS = {
    "dropout": (nn.Dropout, (6,)),
    "alpha_dropout": (nn.AlphaDropout, (6, 2)),
    "feature_alpha_dropout": (nn.FeatureAlphaDropout, (6, 5)),
    "dropout1d": (nn.Dropout1d, (6, 2)),
    "dropout1d_2d_input": (nn.Dropout1d, (6,)),
    "dropout2d": (nn.Dropout2d, (6, 3, 3)),
    "dropout2d_3d_input": (nn.Dropout2d, (6, 2)),
    "dropout3d": (nn.Dropout3d, (3, 3, 3, 3)),
    "dropout3d_4d_input": (nn.Dropout3d, (3, 3, 3)),
    "dropout3d_3d_input": (nn.Dropout3d, (3, 3)),
    "drop_path": (DropPath, (6, 2)),
}


def _dropped(out: torch.Tensor, cls: type, members: bool = True) -> torch.Tensor:
    """Where a dropout layer dropped, on an input of ones: zeros, or alpha dropout's dropped value
    (below the kept one; both depend on the member's rate)."""
    if cls not in (nn.AlphaDropout, nn.FeatureAlphaDropout):
        return out.abs() < 1e-12
    dims = tuple(range(1 if members else 0, out.ndim))
    return out < out.amax(dim=dims, keepdim=True) - 1e-9


@pytest.mark.parametrize("kind", sorted(DROPOUTS))
@pytest.mark.parametrize("rates", [(0.3, 0.3, 0.3), (0.1, 0.4, 0.7)])
def test_dropout_draws_each_members_masks_at_its_rate(kind, rates):
    cls, shape = DROPOUTS[kind]
    layers = [cls(p) for p in rates]
    stacked = stack_modules(layers, "drop").train()
    assert isinstance(stacked, cls)  # schedules and MC dropout find it as they find the member's
    assert dropout_carriers(nn.Sequential(stacked)) == [
        ("drop_path" if cls is DropPath else "dropout", stacked)
    ]
    torch.manual_seed(0)
    ones = torch.ones(K, 2000, *shape, dtype=torch.float64)
    out = stacked(ones)
    dropped = _dropped(out, cls)
    # The member's kind of mask: along the same dimensions of a member's input as torch draws them.
    member_out = _dropped(layers[0].train()(ones[0]), cls, members=False)
    assert _pattern_dims(dropped[0]) == _pattern_dims(member_out)
    for k, p in enumerate(rates):
        units = dropped[k].reshape(*dropped.shape[1 : 1 + _pattern_dims(member_out)], -1)[..., 0]
        share = units.double().mean().item()
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / units.numel()) + 1e-9, (k, share, p)
    assert not torch.equal(dropped[0], dropped[1])  # independent masks, also at one rate
    if cls not in (nn.AlphaDropout, nn.FeatureAlphaDropout):
        for k, p in enumerate(rates):
            kept = out[k][~dropped[k]]
            assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    else:  # alpha dropout keeps zero mean and unit variance of standard normal inputs
        z = stacked(torch.randn(K, 4000, *shape, dtype=torch.float64))
        assert z.mean(dim=tuple(range(1, z.ndim))).abs().max() < 0.05
        assert (z.var(dim=tuple(range(1, z.ndim))) - 1).abs().max() < 0.1
    assert torch.equal(stacked.eval()(ones), ones)


def _pattern_dims(dropped: torch.Tensor) -> int:
    for kept in range(dropped.ndim + 1):
        flat = dropped.reshape(*dropped.shape[:kept], -1)
        if (flat == flat[..., :1]).all():
            return kept
    return dropped.ndim


@pytest.mark.parametrize("name", ["mlp", "lstm_net", "transformer_net"])
def test_members_with_equal_weights_differ_by_their_dropout_masks_only(name):
    shape, extra, outputs, knobs = MODEL_DATA[name]
    torch.manual_seed(0)
    net = build_net(model_spec(name, knobs), shape, outputs, **extra).double()
    stacked = stack_nets([copy.deepcopy(net) for _ in range(K)])
    x = inputs(shape, extra.get("vocab_size"))[:1].expand(K, *([-1] * (len(shape) + 1)))
    train = stacked.train()(x)
    assert not torch.allclose(train[0], train[1]) and not torch.allclose(train[1], train[2])
    evaluated = stacked.eval()(x)
    assert torch.allclose(evaluated[0], evaluated[1], rtol=0, atol=TOL)
    set_dropout_p(stacked, 0.0)  # a schedule's rate reaches every member's
    assert torch.allclose(stacked.train()(x)[0], evaluated[1], rtol=0, atol=TOL)
    assert F.mse_loss(train[0], evaluated[0]) > 0


def test_members_with_other_dropout_rates_keep_their_own():
    shape, _, outputs, knobs = MODEL_DATA["mlp"]
    rates = (0.0, 0.3, 0.6)
    specs = [model_spec("mlp", {**knobs, "dropout": p}) for p in rates]
    nets = [members(lambda s=s: build_net(s, shape, outputs), k=1)[0] for s in specs]
    stacked = stack_nets(nets).train()
    assert {layer.p for _, layer in dropout_carriers(stacked)} == {rates}
    x = inputs(shape)
    out = stacked(x)
    # The member at rate 0 computes what it computes alone; the others are masked.
    assert torch.allclose(out[0], nets[0].train()(x[0]), rtol=0, atol=TOL)
    assert not torch.allclose(out[1], nets[1].eval()(x[1]))
    dropped = stacked.block_1.dropout(torch.ones(K, 4000, 8, dtype=torch.float64)) == 0
    shares = dropped.double().mean(dim=(1, 2))
    assert torch.allclose(shares, torch.tensor(rates, dtype=torch.float64), atol=0.02)


def test_recurrent_members_keep_their_own_rates_and_the_transformer_names_other_rates():
    lstms = [nn.Sequential(OrderedDict(lstm=LSTM(3, 4, num_layers=2, dropout=p))) for p in (0, 0.5)]
    assert stack_nets(lstms).lstm.between.p == (0.0, 0.5)
    shape, extra, outputs, knobs = MODEL_DATA["transformer_net"]
    specs = [model_spec("transformer_net", {**knobs, "dropout": p}) for p in (0.1, 0.2)]
    with pytest.raises(
        NotStackable, match=r"^transformer_encoder \(reglab.nn.sequence.Trans.*other dropout rates"
    ):
        stack_nets([build_net(spec, shape, outputs, **extra) for spec in specs])
