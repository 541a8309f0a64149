"""The layer catalogue and the net builder: every registered layer builds, runs forward and
backward from a YAML spec; Swish, Mish and the gated block match hand-written references; shape
inference, init schemes, BatchNorm statistics and the builder's errors.

Sequence, token and vision entries of the catalogue and residual blocks: shapes and dtypes
inferred through the builder's dry forward pass (also inside `repeat` and `residual`), outputs
against hand-written references, the ready models of conf/model, and one-line errors naming the
spec entry for every misuse.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import reglab.nn
from reglab.errors import ConfigError
from reglab.nn import LAYERS, build_net, get_layer, layer_names, register_layer
from reglab.nn.drop_path import DropPath
from reglab.nn.residual import Residual
from reglab.nn.sequence import sinusoids
from reglab.registry import normalize_name

BATCH = 4
NUM_OUTPUTS = 3

DOCUMENTED_LAYERS = {
    "linear", "flatten", "identity", "conv2d", "conv3d", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "batch_norm1d", "batch_norm2d", "layer_norm", "instance_norm2d",
    "group_norm", "dropout", "dropout2d", "dropout3d", "alpha_dropout", "relu", "relu6",
    "leaky_relu", "prelu", "elu", "selu", "gelu", "silu", "swish", "mish", "softplus", "sigmoid",
    "log_sigmoid", "tanh", "hardtanh", "softmax", "log_softmax", "softmax2d", "gated",
    "embedding", "lstm", "gru", "transformer_encoder", "positional_encoding", "sequence_pool",
    "upsample", "conv_transpose2d",
}  # fmt: skip

FEATURES = (6,)
IMAGE = (3, 8, 8)
VOLUME = (2, 4, 4, 4)
SEQUENCE = (7, 6)
TOKENS = (10,)  # integer ids in [0, VOCAB)
VOCAB = 13


def _after_linear(entry: str) -> tuple[str, tuple[int, ...]]:
    """A feature net: Linear(6 -> 6) then the layer under test, then the head."""
    return f"layers:\n  - linear: {{out_features: 6}}\n  - {entry}\n", FEATURES


def _then_flatten(entry: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """An image/volume net: the layer under test, then flatten, then the head."""
    return f"layers:\n  - {entry}\n  - flatten\n", shape


# One YAML spec and input shape per registered layer name (the module under test is named by it).
CASES: dict[str, tuple[str, tuple[int, ...]]] = {
    "linear": ("layers:\n  - linear: {out_features: 5}\n", FEATURES),
    "flatten": ("layers: [flatten]\n", IMAGE),
    "identity": _after_linear("identity"),
    "conv2d": _then_flatten("conv2d: {out_channels: 4, kernel_size: 3, padding: 1}", IMAGE),
    "conv3d": _then_flatten("conv3d: {out_channels: 3, kernel_size: 3}", VOLUME),
    "max_pool2d": _then_flatten("max_pool2d: {kernel_size: 2}", IMAGE),
    "avg_pool2d": _then_flatten("avg_pool2d: {kernel_size: 2}", IMAGE),
    "adaptive_avg_pool2d": _then_flatten("adaptive_avg_pool2d: {output_size: 2}", IMAGE),
    "max_pool3d": _then_flatten("max_pool3d: {kernel_size: 2}", VOLUME),
    "adaptive_avg_pool3d": _then_flatten("adaptive_avg_pool3d: {output_size: 1}", VOLUME),
    "batch_norm1d": _after_linear("batch_norm1d"),
    "batch_norm2d": _then_flatten("batch_norm2d", IMAGE),
    "batch_norm3d": _then_flatten("batch_norm3d", VOLUME),
    "layer_norm": _after_linear("layer_norm"),
    "instance_norm2d": _then_flatten("instance_norm2d: {affine: true}", IMAGE),
    "group_norm": _then_flatten("group_norm", (4, 8, 8)),
    "dropout": _after_linear("dropout: {p: 0.3}"),
    "dropout2d": _then_flatten("dropout2d", IMAGE),
    "dropout3d": _then_flatten("dropout3d", VOLUME),
    "alpha_dropout": _after_linear("alpha_dropout: {p: 0.2}"),
    "relu": _after_linear("relu"),
    "relu6": _after_linear("relu6"),
    "leaky_relu": _after_linear("leaky_relu: {negative_slope: 0.1}"),
    "prelu": _after_linear("prelu"),
    "elu": _after_linear("elu"),
    "selu": _after_linear("selu"),
    "gelu": _after_linear("gelu"),
    "silu": _after_linear("silu"),
    "swish": _after_linear("swish: {beta: 1.5, learnable: true}"),
    "mish": _after_linear("mish"),
    "softplus": _after_linear("softplus"),
    "sigmoid": _after_linear("sigmoid"),
    "log_sigmoid": _after_linear("log_sigmoid"),
    "tanh": _after_linear("tanh"),
    "hardtanh": _after_linear("hardtanh"),
    "softmax": _after_linear("softmax: {dim: -1}"),
    "log_softmax": _after_linear("log_softmax: {dim: -1}"),
    "softmax2d": _then_flatten("softmax2d", IMAGE),
    "gated": _after_linear("gated: {out_features: 4}"),
    "embedding": ("layers:\n  - embedding: {embedding_dim: 3}\n  - flatten\n", TOKENS),
    "lstm": ("layers:\n  - lstm: {hidden_size: 5, num_layers: 2, dropout: 0.1}\n", SEQUENCE),
    "gru": ("layers:\n  - gru: {hidden_size: 4, bidirectional: true, output: mean}\n", SEQUENCE),
    "transformer_encoder": (
        "layers:\n  - transformer_encoder: {nhead: 2, dim_feedforward: 8}\n  - sequence_pool\n",
        SEQUENCE,
    ),
    "positional_encoding": ("layers:\n  - positional_encoding\n  - flatten\n", SEQUENCE),
    "sequence_pool": ("layers:\n  - sequence_pool: {mode: max}\n", SEQUENCE),
    "upsample": _then_flatten("upsample: {scale_factor: 2, mode: bilinear}", IMAGE),
    "conv_transpose2d": _then_flatten(
        "conv_transpose2d: {out_channels: 2, kernel_size: 2, stride: 2}", IMAGE
    ),
}
# Layers whose case feeds integer token ids in [0, VOCAB) instead of float inputs.
TOKEN_LAYERS = {"embedding"}


def spec_from_yaml(text: str) -> dict:
    """A model spec as Hydra hands it over: YAML -> OmegaConf -> plain container."""
    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def build(text: str, input_shape, num_outputs: int = NUM_OUTPUTS, **data) -> nn.Sequential:
    return build_net(spec_from_yaml(text), input_shape, num_outputs, **data)


def config_error(text: str, input_shape=FEATURES) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(text, input_shape)
    return info.value


# --- the catalogue ------------------------------------------------------------------------------


def test_catalogue_holds_every_documented_layer():
    names = set(layer_names())
    assert names >= DOCUMENTED_LAYERS, f"missing: {sorted(DOCUMENTED_LAYERS - names)}"
    assert layer_names() == sorted(names)  # sorted, no duplicates
    assert set(reglab.nn.LAYERS) == names and len(reglab.nn.LAYERS) == len(names)
    assert {normalize_name(n) for n in reglab.nn.LAYERS} == {n.replace("_", "") for n in names}


def test_layer_names_match_any_spelling():
    entry = get_layer("batch_norm1d")
    assert entry is not None and entry.cls is nn.BatchNorm1d
    for spelling in ("BatchNorm1d", "batchnorm1d", "batch-norm1d", "BATCH_NORM1D"):
        assert get_layer(spelling) is entry
    assert get_layer("no_such_layer") is None
    with pytest.raises(KeyError):
        reglab.nn.register_layer("ReLU", nn.ReLU)  # already registered under another spelling


@pytest.mark.parametrize("name", layer_names())
def test_every_layer_builds_runs_forward_and_backward(name):
    assert name in CASES, f"registered layer {name!r} has no test case in CASES"
    text, input_shape = CASES[name]
    tokens = name in TOKEN_LAYERS
    torch.manual_seed(0)
    data = {"input_dtype": torch.int64, "vocab_size": VOCAB} if tokens else {}
    net = build(text, input_shape, **data)
    assert net.training

    modules = dict(net.named_modules())
    assert name in modules, f"{name!r} not among {sorted(modules)}"
    assert isinstance(modules[name], get_layer(name).cls)
    assert f"({name}): " in str(net)
    assert isinstance(modules["head"], nn.Linear)
    assert modules["head"].out_features == NUM_OUTPUTS

    x = (
        torch.randint(0, VOCAB, (BATCH, *input_shape))
        if tokens
        else torch.randn(BATCH, *input_shape)
    )
    out = net(x)
    assert out.shape == (BATCH, NUM_OUTPUTS)
    assert torch.isfinite(out).all()

    loss = (out * torch.randn_like(out)).sum() + out.square().mean()
    loss.backward()
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert params  # at least the head
    for pname, p in params:
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    # The layer's own parameters (prelu, swish beta, norms, gated, ...) take part in training.
    own = [p for p in modules[name].parameters() if p.requires_grad]
    if own:
        assert any(p.grad.abs().sum() > 0 for p in own)


def test_modules_are_named_by_short_name_numbered_when_repeated():
    text = """
layers:
  - Linear: {out_features: 8}
  - relu
  - linear: {out_features: 8}
  - ReLU
  - repeat: 2
    block:
      - linear: {out_features: 8}
      - swish
  - batch_norm1d
"""
    net = build(text, FEATURES)
    children = [n for n, _ in net.named_children()]
    assert children == [
        "linear_1",
        "relu_1",
        "linear_2",
        "relu_2",
        "block_1",
        "block_2",
        "batch_norm1d",
        "head",
    ]
    modules = dict(net.named_modules())
    for block in ("block_1", "block_2"):
        assert isinstance(modules[block], nn.Sequential)
        assert isinstance(modules[f"{block}.linear"], nn.Linear)
        assert isinstance(modules[f"{block}.swish"], get_layer("swish").cls)
    # The two repeats are independent copies, not one shared module.
    assert modules["block_1.linear"] is not modules["block_2.linear"]
    assert (
        modules["block_1.linear"].weight.data_ptr() != modules["block_2.linear"].weight.data_ptr()
    )
    assert net(torch.randn(BATCH, *FEATURES)).shape == (BATCH, NUM_OUTPUTS)


def test_numbered_names_never_collide_with_registered_names():
    net = build("layers: [relu, relu, relu, relu, relu, relu, relu6]\n", FEATURES)
    kinds = [type(m).__name__ for m in net.children()]
    assert kinds == ["ReLU"] * 6 + ["ReLU6", "Linear"]
    assert isinstance(net.relu6, nn.ReLU6) and isinstance(net.relu_6, nn.ReLU)


def test_head_false_leaves_the_body_as_output():
    net = build("layers: [{linear: {out_features: 7}}, tanh]\nhead: false\n", FEATURES, 7)
    assert "head" not in dict(net.named_children())
    assert net(torch.randn(BATCH, *FEATURES)).shape == (BATCH, 7)


def test_head_false_with_a_body_of_another_size_than_the_data_is_refused():
    error = config_error("layers: [{linear: {out_features: 7}}, tanh]\nhead: false\n")
    assert error.key == "head" and f"needs ({NUM_OUTPUTS},)" in error.message


def test_knobs_are_interpolated_into_the_layers():
    text = """
width: 5
depth: 3
layers:
  - flatten
  - repeat: ${depth}
    block:
      - gated: {out_features: "${width}"}
"""
    net = build(text, IMAGE)
    blocks = [n for n, _ in net.named_children() if n.startswith("block")]
    assert blocks == ["block_1", "block_2", "block_3"]
    assert net.block_1.gated.fc_full.in_features == 3 * 8 * 8
    assert net.block_2.gated.fc_full.in_features == 5
    assert net.head.in_features == 5


# --- Swish and Mish -----------------------------------------------------------------------------


def test_learnable_swish_beta_is_a_parameter_and_learns():
    torch.manual_seed(0)
    net = build(
        "layers:\n  - linear: {out_features: 6}\n  - swish: {learnable: true, beta: 1.5}\n",
        FEATURES,
    )
    swish = net.swish
    assert isinstance(swish.beta, nn.Parameter)
    assert "swish.beta" in dict(net.named_parameters())
    assert swish.beta.item() == 1.5
    assert "beta=1.5, learnable=True" in str(net)
    net(torch.randn(8, 6)).square().sum().backward()
    assert swish.beta.grad is not None
    assert swish.beta.grad.abs() > 0


def test_fixed_swish_beta_is_a_buffer_not_a_parameter():
    net = build("layers:\n  - swish: {beta: 2.0}\n", FEATURES)
    assert not isinstance(net.swish.beta, nn.Parameter)
    assert "swish.beta" not in dict(net.named_parameters())
    assert "swish.beta" in dict(net.named_buffers())
    assert float(net.swish.beta) == 2.0


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("beta", [0.25, 0.5, 1.0, 1.5, 2.0, 4.0, -1.0])
def test_swish_matches_its_formula(beta, learnable):
    swish = get_layer("swish").cls(beta=beta, learnable=learnable).double()
    x = torch.linspace(-12, 12, 241, dtype=torch.float64)
    expected = x * torch.sigmoid(beta * x)
    torch.testing.assert_close(swish(x), expected, rtol=1e-12, atol=1e-12)


def test_swish_with_beta_one_is_silu():
    swish = get_layer("swish").cls().double()
    x = torch.randn(1000, dtype=torch.float64) * 5
    torch.testing.assert_close(swish(x), F.silu(x), rtol=1e-12, atol=1e-12)


def test_mish_matches_hand_computation_including_large_inputs():
    mish = get_layer("mish").cls()
    x = torch.cat(
        [
            torch.linspace(-10, 10, 201, dtype=torch.float64),
            torch.tensor(
                [-1000.0, -100.0, -50.0, -30.0, 30.0, 50.0, 100.0, 1000.0], dtype=torch.float64
            ),
        ]
    )
    softplus = x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))  # stable log(1 + e^x)
    expected = x * torch.tanh(softplus)
    out = mish(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[-4:], x[-4:], rtol=1e-12, atol=0.0)  # mish(x) -> x for x >> 0


# --- the gated block ----------------------------------------------------------------------------


class GatedReference(nn.Module):
    """Linear(in, 2*out) -> BatchNorm1d over the (N*, 2*out) view -> sigmoid(first) * softplus(second)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * out_features)
        self.norm = nn.BatchNorm1d(2 * out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)
        flat = h.reshape(-1, h.shape[-1])
        h = self.norm(flat).reshape(h.shape)
        first, second = h.chunk(2, dim=-1)
        return torch.sigmoid(first) * F.softplus(second)


def _gated_pair(in_features: int = 5, out_features: int = 3):
    torch.manual_seed(0)
    gated = get_layer("gated").cls(in_features=in_features, out_features=out_features).double()
    with torch.no_grad():  # make the affine BatchNorm parameters non-trivial
        gated.bn.weight.uniform_(0.5, 2.0)
        gated.bn.bias.uniform_(-1.0, 1.0)
    ref = GatedReference(in_features, out_features).double()
    ref.linear.load_state_dict(gated.fc_full.state_dict())
    ref.norm.load_state_dict(gated.bn.state_dict())
    return gated, ref


@pytest.mark.parametrize("shape", [(16, 5), (4, 7, 5)], ids=["2d", "3d"])
def test_gated_matches_reference_in_train_and_eval_mode(shape):
    gated, ref = _gated_pair()
    gated.train()
    ref.train()
    for _ in range(3):  # train mode: batch statistics, running statistics move identically
        x = torch.randn(*shape, dtype=torch.float64) * 2 + 0.5
        out = gated(x)
        assert out.shape == (*shape[:-1], 3)
        torch.testing.assert_close(out, ref(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gated.bn.running_mean, ref.norm.running_mean)
    torch.testing.assert_close(gated.bn.running_var, ref.norm.running_var)
    assert int(gated.bn.num_batches_tracked) == 3
    assert not torch.allclose(gated.bn.running_mean, torch.zeros_like(gated.bn.running_mean))

    gated.eval()  # eval mode: the running statistics
    ref.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(gated(x), ref(x), rtol=1e-10, atol=1e-12)
    # ... which differ from the batch statistics, so the two modes really were both checked.
    ref.train()
    assert not torch.allclose(gated(x), ref(x))


def test_gated_3d_input_normalizes_over_all_positions_like_cgcnn():
    gated, _ = _gated_pair(in_features=5, out_features=3)
    gated.train()
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    pre = gated.fc_full(x).reshape(-1, 6)
    gated(x)
    # BatchNorm saw all 6*4 rows: its running mean moved towards their mean (momentum 0.1).
    torch.testing.assert_close(gated.bn.running_mean, 0.1 * pre.mean(0).detach())


def test_gated_builds_on_sequence_input_and_backpropagates():
    net = build("layers:\n  - gated: {out_features: 3}\n  - flatten\n", (7, 5))
    assert net.gated.fc_full.in_features == 5
    assert net.gated.fc_full.out_features == 6
    assert net.head.in_features == 7 * 3
    out = net(torch.randn(BATCH, 7, 5))
    assert out.shape == (BATCH, NUM_OUTPUTS)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# --- shape inference ----------------------------------------------------------------------------


def test_shape_arguments_are_inferred():
    text = """
layers:
  - conv2d: {out_channels: 8, kernel_size: 3, padding: 1}
  - batch_norm2d
  - group_norm
  - layer_norm
  - max_pool2d: {kernel_size: 2}
  - conv2d: {out_channels: 4, kernel_size: 3}
  - flatten
  - linear: {out_features: 10}
  - batch_norm1d
  - layer_norm
"""
    net = build(text, IMAGE)
    assert net.conv2d_1.in_channels == 3
    assert net.batch_norm2d.num_features == 8
    assert net.group_norm.num_channels == 8
    assert net.group_norm.num_groups == 4  # the largest of 8/4/2 below the channel count
    assert tuple(net.layer_norm_1.normalized_shape) == (8, 8, 8)
    assert net.conv2d_2.in_channels == 8
    assert net.linear.in_features == 4 * 2 * 2
    assert net.batch_norm1d.num_features == 10
    assert tuple(net.layer_norm_2.normalized_shape) == (10,)
    assert net.head.in_features == 10
    assert net(torch.randn(BATCH, *IMAGE)).shape == (BATCH, NUM_OUTPUTS)


def test_conv3d_in_channels_is_inferred():
    net = build(
        "layers:\n  - conv3d: {out_channels: 5, kernel_size: 3}\n  - batch_norm3d\n  - flatten\n",
        VOLUME,
    )
    assert net.conv3d.in_channels == 2
    assert net.batch_norm3d.num_features == 5
    assert net.head.in_features == 5 * 2 * 2 * 2


def test_explicit_shape_arguments_win_when_consistent():
    text = """
layers:
  - conv2d: {in_channels: 3, out_channels: 8, kernel_size: 3, padding: 1}
  - group_norm: {num_groups: 2}
  - layer_norm: {normalized_shape: [8]}
  - flatten
  - linear: {in_features: 512, out_features: 6}
"""
    net = build(text, IMAGE)
    assert net.conv2d.in_channels == 3
    assert net.group_norm.num_groups == 2  # the inferred default would be 4
    assert net.group_norm.num_channels == 8
    assert tuple(net.layer_norm.normalized_shape) == (8,)  # last dim only, not (8, 8, 8)
    assert net.linear.in_features == 512


@pytest.mark.parametrize(
    "text",
    [
        "layers: [{linear: {in_features: 5, out_features: 4}}]",
        "layers: [{batch_norm1d: {num_features: 4}}]",
        "layers: [{layer_norm: {normalized_shape: [5]}}]",
    ],
)
def test_explicit_shape_arguments_that_contradict_the_input_are_rejected(text):
    error = config_error(text, FEATURES)
    assert error.key.startswith("layers[0]")
    assert "(6,)" in str(error)


# --- init schemes -------------------------------------------------------------------------------


def _big_net(init: str) -> nn.Sequential:
    torch.manual_seed(0)
    text = f"""
init: {init}
layers:
  - linear: {{out_features: 512}}
  - relu
"""
    return build(text, (512,), 10)


def test_lecun_normal_init():
    net = _big_net("lecun_normal")
    std = float(net.linear.weight.detach().std())
    assert std == pytest.approx(1 / math.sqrt(512), rel=0.05)
    assert float(net.linear.weight.detach().mean()) == pytest.approx(0.0, abs=1e-3)
    assert torch.count_nonzero(net.linear.bias) == 0
    assert torch.count_nonzero(net.head.bias) == 0
    # The default init (uniform, bound 1/sqrt(fan_in)) has std 1/sqrt(3*fan_in): clearly different.
    default = _big_net("default")
    assert float(default.linear.weight.detach().std()) < 0.7 * std
    assert torch.count_nonzero(default.linear.bias) > 0


def test_lecun_normal_uses_the_convolution_fan_in():
    torch.manual_seed(0)
    net = build(
        "init: lecun_normal\nlayers:\n  - conv2d: {out_channels: 64, kernel_size: 3}\n  - flatten\n",
        (16, 5, 5),
    )
    assert float(net.conv2d.weight.detach().std()) == pytest.approx(
        1 / math.sqrt(16 * 3 * 3), rel=0.05
    )
    assert torch.count_nonzero(net.conv2d.bias) == 0


def test_kaiming_normal_init():
    net = _big_net("kaiming_normal")
    assert float(net.linear.weight.detach().std()) == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert torch.count_nonzero(net.linear.bias) == 0


def test_xavier_uniform_init():
    net = _big_net("xavier_uniform")
    assert float(net.linear.weight.detach().std()) == pytest.approx(
        math.sqrt(2 / (512 + 512)), rel=0.05
    )
    assert torch.count_nonzero(net.linear.bias) == 0


def test_unknown_init_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        _big_net("he_uniform")
    message = str(info.value)
    assert info.value.key == "init"
    assert message.startswith("init: ") and "he_uniform" in message
    for valid in ("default", "lecun_normal", "kaiming_normal", "xavier_uniform"):
        assert valid in message


# --- errors -------------------------------------------------------------------------------------


def test_unknown_layer_names_the_entry_and_lists_valid_layers():
    error = config_error("layers:\n  - linear: {out_features: 4}\n  - relu\n  - swishh\n")
    message = str(error)
    assert error.key == "layers[2]"
    assert "layers[2]" in message
    assert "'swishh'" in message
    assert "linear" in message and "swish" in message and "batch_norm1d" in message


def test_unknown_layer_inside_a_repeat_block_names_the_nested_path():
    error = config_error("layers:\n  - repeat: 2\n    block:\n      - relu\n      - rleu\n")
    assert error.key == "layers[0].block[1]"
    assert "'rleu'" in str(error)


@pytest.mark.parametrize("layer", ["dropout", "alpha_dropout", "dropout2d"])
def test_dropout_p_of_one_or_more_is_rejected_with_its_path(layer):
    shape = IMAGE if layer == "dropout2d" else FEATURES
    error = config_error(f"layers:\n  - relu\n  - {layer}: {{p: 1.0}}\n", shape)
    assert error.key == f"layers[1].{layer}.p"
    assert "[0, 1)" in str(error)


def test_unknown_kwarg_names_it_and_lists_valid_arguments():
    error = config_error("layers:\n  - linear: {out_features: 4, out_feature: 3}\n")
    message = str(error)
    assert error.key == "layers[0].linear"
    assert "'out_feature'" in message
    assert "valid: " in message
    for valid in ("in_features", "out_features", "bias"):
        assert valid in message

    error = config_error("layers:\n  - swish: {alpha: 2}\n")
    assert "'alpha'" in str(error) and "beta" in str(error) and "learnable" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "missing"),
    [
        ("layers: [linear]", "layers[0].linear", "out_features"),
        ("layers: [{gated: {}}]", "layers[0].gated", "out_features"),
        ("layers: [max_pool2d, flatten]", "layers[0].max_pool2d", "kernel_size"),
        ("layers: [{conv2d: {out_channels: 4}}, flatten]", "layers[0].conv2d", "kernel_size"),
    ],
)
def test_missing_required_kwarg(text, key, missing):
    shape = IMAGE if "2d" in text else FEATURES
    error = config_error(text, shape)
    assert error.key == key
    assert "missing required" in str(error)
    assert missing in str(error)


def test_shape_mismatch_conv2d_on_flat_input():
    error = config_error(
        "layers:\n  - linear: {out_features: 6}\n  - conv2d: {out_channels: 4, kernel_size: 3}\n"
    )
    assert error.key == "layers[1]"
    assert "conv2d" in str(error) and "(6,)" in str(error)


def test_body_must_end_flat_before_the_head():
    error = config_error("layers:\n  - conv2d: {out_channels: 4, kernel_size: 3}\n", IMAGE)
    assert error.key == "layers"
    assert "(4, 6, 6)" in str(error)
    assert "flatten" in str(error)


@pytest.mark.parametrize("times", ["-1", "1.5", "two", "null", "true"])
def test_bad_repeat(times):
    error = config_error(f"layers:\n  - repeat: {times}\n    block: [relu]\n")
    assert error.key == "layers[0].repeat"
    assert "integer >= 0" in str(error)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("layers:\n  - repeat: 2\n", "layers[0].block"),
        ("layers:\n  - repeat: 2\n    block: []\n", "layers[0].block"),
        ("layers:\n  - repeat: 2\n    block: [relu]\n    times: 3\n", "layers[0]"),
        ("layers: []\n", "layers"),
        ("layers: relu\n", "layers"),
        ("layers:\n  - {relu: 3}\n", "layers[0].relu"),
        ("layers:\n  - {relu: {}, tanh: {}}\n", "layers[0]"),
    ],
)
def test_malformed_entries(text, key):
    assert config_error(text).key == key


def test_repeat_zero_builds_nothing():
    net = build("layers:\n  - repeat: 0\n    block: [{linear: {out_features: 9}}]\n", FEATURES)
    assert [n for n, _ in net.named_children()] == ["head"]
    assert net.head.in_features == 6


def test_none_and_null_entries_are_skipped():
    text = """
norm: none
layers:
  - linear: {out_features: 5}
  - none
  - null
  - ~
  - ${norm}
  - relu
"""
    spec = spec_from_yaml(text)
    assert spec["layers"].count(None) == 2 and spec["layers"].count("none") == 2
    net = build_net(spec, FEATURES, NUM_OUTPUTS)
    assert [n for n, _ in net.named_children()] == ["linear", "relu", "head"]


# --- the model's knobs --------------------------------------------------------------------------

MLP_SPEC = """
width: 8
depth: 1
activation: relu
norm: none
dropout: 0.1
layers:
  - repeat: ${depth}
    block:
      - linear: {out_features: "${width}"}
      - ${activation}
      - ${norm}
      - dropout: {p: "${dropout}"}
"""


def _mlp(**knobs) -> dict:
    """The spec with `knobs` set, interpolated into the layers as a config override would be."""
    spec = OmegaConf.merge(OmegaConf.create(MLP_SPEC), knobs)
    return OmegaConf.to_container(spec, resolve=True)


def test_layer_kinds_are_declared_for_every_entry():
    assert all(entry.kind in reglab.nn.LAYER_KINDS for entry in map(get_layer, layer_names()))
    assert layer_names("norm") == [
        "batch_norm1d", "batch_norm2d", "batch_norm3d", "group_norm", "instance_norm2d", "layer_norm",
    ]  # fmt: skip
    assert {"relu", "selu", "swish", "mish", "tanh", "softmax"} <= set(layer_names("activation"))
    assert not set(layer_names("activation")) & set(layer_names("norm"))
    assert get_layer("gated").kind == "linear"
    assert layer_names("dropout") == ["alpha_dropout", "dropout", "dropout2d", "dropout3d"]
    assert sum(len(layer_names(kind)) for kind in reglab.nn.LAYER_KINDS) == len(layer_names())


@pytest.mark.parametrize(
    ("knobs", "kinds"),
    [
        ({"activation": "GELU"}, ["Linear", "GELU", "Dropout"]),
        ({"activation": {"swish": {"learnable": True}}}, ["Linear", "Swish", "Dropout"]),
        ({"activation": "none", "norm": "layer_norm"}, ["Linear", "LayerNorm", "Dropout"]),
        ({"norm": "BatchNorm1d"}, ["Linear", "ReLU", "BatchNorm1d", "Dropout"]),
    ],
)
def test_knobs_accept_a_layer_of_their_kind_in_any_spelling(knobs, kinds):
    net = build_net(_mlp(**knobs), FEATURES, NUM_OUTPUTS)
    assert [type(m).__name__ for m in net.block.children()] == kinds
    assert net(torch.randn(BATCH, *FEATURES)).shape == (BATCH, NUM_OUTPUTS)


@pytest.mark.parametrize(
    ("knobs", "key", "listed", "unlisted"),
    [
        ({"activation": "relux"}, "activation", "mish", "layer_norm"),
        ({"activation": "layer_norm"}, "activation", "swish", "batch_norm1d"),
        ({"activation": "dropout"}, "activation", "relu", "alpha_dropout"),
        ({"norm": "relu"}, "norm", "group_norm", "relu"),
        ({"norm": {"relu": {}, "tanh": {}}}, "norm", "layer_norm", "tanh"),
    ],
)
def test_knobs_refuse_a_layer_of_another_kind_listing_their_kind(knobs, key, listed, unlisted):
    with pytest.raises(ConfigError) as info:
        build_net(_mlp(**knobs), FEATURES, NUM_OUTPUTS)
    assert info.value.key == key
    valid = str(info.value).split("valid: ")[1].split(", ")
    assert listed in valid and unlisted not in valid and "none" in valid


@pytest.mark.parametrize(
    ("knobs", "key", "allowed"),
    [
        ({"dropout": 1.0}, "dropout", "[0, 1)"),
        ({"dropout": -0.1}, "dropout", "[0, 1)"),
        ({"width": 0}, "width", ">= 1"),
        ({"width": 2.5}, "width", ">= 1"),
        ({"depth": -1}, "depth", ">= 0"),
    ],
)
def test_numeric_knobs_are_range_checked_before_building(knobs, key, allowed):
    with pytest.raises(ConfigError) as info:
        build_net(_mlp(**knobs), FEATURES, NUM_OUTPUTS)
    assert info.value.key == key
    assert allowed in str(info.value)


def test_the_head_is_keyed_head():
    with pytest.raises(ConfigError) as info:
        build_net(spec_from_yaml("layers: [relu]"), FEATURES, 0)
    assert info.value.key == "head.linear.out_features"


def test_config_errors_are_value_errors():
    # ConfigError subclasses ValueError, so generic handlers still catch it.
    with pytest.raises(ValueError):
        build("layers: [nope]", FEATURES)


# --- the dry forward ----------------------------------------------------------------------------


def test_dry_forward_leaves_batchnorm_statistics_untouched_and_net_in_train_mode():
    text = """
layers:
  - conv2d: {out_channels: 4, kernel_size: 3}
  - batch_norm2d
  - dropout2d
  - flatten
  - batch_norm1d
  - repeat: 2
    block:
      - gated: {out_features: 6}
      - batch_norm1d
"""
    net = build(text, IMAGE)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 6  # batch_norm2d, batch_norm1d, 2 x (gated.bn, batch_norm1d)
    for bn in norms:
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert int(bn.num_batches_tracked) == 0
    assert all(m.training for m in net.modules())

    net(torch.randn(BATCH, *IMAGE))  # a real training forward does move them
    assert all(int(bn.num_batches_tracked) == 1 for bn in norms)
    assert not torch.equal(norms[0].running_mean, torch.zeros_like(norms[0].running_mean))


# --- sequence, token and vision entries -----------------------------------------------------------

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
SEQ_BATCH = 5
SEQ_TOKENS = (12,)  # 12 token ids
SEQ_VOCAB = 9
SEQ_IMAGE = (2, 8, 8)


def build_sequence(
    text: str, input_shape=SEQUENCE, num_outputs: int = NUM_OUTPUTS, **data
) -> nn.Sequential:
    return build_net(spec_from_yaml(text), input_shape, num_outputs, **data)


def build_tokens(text: str, num_outputs: int = NUM_OUTPUTS) -> nn.Sequential:
    return build_sequence(
        text, SEQ_TOKENS, num_outputs, input_dtype=torch.int64, vocab_size=SEQ_VOCAB
    )


def sequence_error(text: str, input_shape=SEQUENCE, **data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_sequence(text, input_shape, **data)
    assert "\n" not in str(info.value)  # one line
    return info.value


def tokens(batch: int = SEQ_BATCH) -> torch.Tensor:
    return torch.randint(0, SEQ_VOCAB, (batch, *SEQ_TOKENS))


# --- sequence, token and vision entries: embedding ------------------------------------------------


def test_embedding_reads_the_vocabulary_and_turns_ids_into_vectors():
    net = build_tokens("layers:\n  - embedding: {embedding_dim: 4, padding_idx: 0}\n  - flatten\n")
    assert isinstance(net.embedding, nn.Embedding)
    assert net.embedding.num_embeddings == SEQ_VOCAB and net.embedding.embedding_dim == 4
    assert net.embedding.padding_idx == 0
    assert net.head.in_features == SEQ_TOKENS[0] * 4
    ids = tokens()
    vectors = net.embedding(ids)
    assert vectors.shape == (SEQ_BATCH, *SEQ_TOKENS, 4) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors, net.embedding.weight[ids])
    assert net(ids).shape == (SEQ_BATCH, NUM_OUTPUTS)


def test_embedding_without_a_vocabulary_needs_num_embeddings():
    spec = spec_from_yaml("layers:\n  - embedding: {embedding_dim: 4}\n  - flatten\n")
    with pytest.raises(ConfigError) as info:
        build_net(spec, SEQ_TOKENS, NUM_OUTPUTS, input_dtype=torch.int64)
    assert info.value.key == "layers[0].embedding" and "num_embeddings" in str(info.value)
    spec["layers"][0]["embedding"]["num_embeddings"] = 20
    net = build_net(spec, SEQ_TOKENS, NUM_OUTPUTS, input_dtype=torch.int64)
    assert net.embedding.num_embeddings == 20


def test_an_embedding_smaller_than_the_vocabulary_is_refused():
    with pytest.raises(ConfigError) as info:
        build_tokens("layers:\n  - embedding: {embedding_dim: 4, num_embeddings: 5}\n  - flatten\n")
    assert info.value.key == "layers[0]" and "int64" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_padding_index_outside_the_vocabulary_names_the_entry():
    with pytest.raises(ConfigError) as info:
        build_tokens("layers:\n  - embedding: {embedding_dim: 4, padding_idx: 50}\n  - flatten\n")
    assert info.value.key == "layers[0].embedding" and "Padding_idx" in str(info.value)


# --- sequence, token and vision entries: LSTM and GRU ---------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_layers_wrap_the_torch_module_batch_first(kind):
    net = build_sequence(f"layers:\n  - {kind}: {{hidden_size: 5, num_layers: 2, dropout: 0.25}}\n")
    rnn = getattr(net, kind).rnn
    assert type(rnn) is {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    assert rnn.input_size == SEQUENCE[-1] and rnn.hidden_size == 5 and rnn.num_layers == 2
    assert rnn.batch_first and rnn.dropout == 0.25
    names = dict(net.named_parameters())
    assert f"{kind}.rnn.weight_ih_l0" in names and f"{kind}.rnn.weight_hh_l1" in names
    assert net.head.in_features == 5
    assert net(torch.randn(SEQ_BATCH, *SEQUENCE)).shape == (SEQ_BATCH, NUM_OUTPUTS)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_outputs_match_the_torch_module(kind, bidirectional):
    torch.manual_seed(0)
    x = torch.randn(SEQ_BATCH, *SEQUENCE)
    outputs = {}
    for output in ("last", "mean", "max", "sequence"):
        torch.manual_seed(1)  # the same weights for every output mode
        wrapper = LAYERS.get(kind).cls(
            SEQUENCE[-1], 4, num_layers=2, bidirectional=bidirectional, output=output
        )
        outputs[output] = wrapper(x)
        steps, state = wrapper.rnn(x)
    hidden = state[0] if kind == "lstm" else state  # (layers * directions, N, 4)
    width = 8 if bidirectional else 4
    assert steps.shape == (SEQ_BATCH, SEQUENCE[0], width)
    torch.testing.assert_close(outputs["sequence"], steps)
    torch.testing.assert_close(outputs["mean"], steps.mean(1))
    torch.testing.assert_close(outputs["max"], steps.max(1).values)
    # `last` is the top layer's final state in each direction (h_n), as the head would read it.
    top = hidden[-2:] if bidirectional else hidden[-1:]
    torch.testing.assert_close(outputs["last"], torch.cat(list(top), dim=-1))


def test_a_sequence_output_feeds_the_next_recurrent_layer_through_repeat():
    text = """
layers:
  - repeat: 2
    block:
      - lstm: {hidden_size: 4, bidirectional: true, output: sequence}
  - gru: {hidden_size: 3}
"""
    net = build_sequence(text)
    assert net.block_1.lstm.rnn.input_size == SEQUENCE[-1]
    assert net.block_2.lstm.rnn.input_size == 8  # both directions of the first
    assert net.gru.rnn.input_size == 8
    assert net.head.in_features == 3
    assert net(torch.randn(SEQ_BATCH, *SEQUENCE)).shape == (SEQ_BATCH, NUM_OUTPUTS)


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ("{hidden_size: 4, output: first}", "output"),
        ("{hidden_size: 4, dropout: 1.0}", "dropout"),
        ("{hidden_size: 4, num_layers: 0}", "num_layers"),
        ("{hidden_size: 0}", "hidden_size"),
        ("{}", ""),
    ],
)
def test_recurrent_arguments_are_checked_under_their_entry(arguments, key):
    error = sequence_error(f"layers:\n  - lstm: {arguments}\n")
    assert error.key == "layers[0].lstm" + (f".{key}" if key else "")
    if not key:
        assert "missing required" in str(error) and "hidden_size" in str(error)


# --- sequence, token and vision entries: transformer encoder, positional encoding, sequence pooling ---


def test_transformer_encoder_infers_d_model_and_holds_torch_modules():
    text = "layers:\n  - transformer_encoder: {nhead: 2, num_layers: 3, dropout: 0.2}\n  - sequence_pool\n"
    net = build_sequence(text)
    encoder = net.transformer_encoder.encoder
    assert isinstance(encoder, nn.TransformerEncoder) and len(encoder.layers) == 3
    assert not encoder.enable_nested_tensor
    layer = encoder.layers[0]
    assert isinstance(layer, nn.TransformerEncoderLayer)
    assert layer.self_attn.batch_first and layer.self_attn.embed_dim == SEQUENCE[-1]
    assert layer.self_attn.num_heads == 2 and layer.self_attn.dropout == 0.2
    assert layer.linear1.out_features == 4 * SEQUENCE[-1]  # dim_feedforward: 4 x d_model
    attention = [m for m in net.modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attention) == 3
    assert "transformer_encoder.encoder.layers.0.self_attn.in_proj_weight" in dict(
        net.named_parameters()
    )
    x = torch.randn(SEQ_BATCH, *SEQUENCE)
    net.eval()
    torch.testing.assert_close(net.transformer_encoder(x), encoder(x))
    assert net(x).shape == (SEQ_BATCH, NUM_OUTPUTS)


def test_transformer_encoder_options():
    text = """
layers:
  - transformer_encoder: {nhead: 3, dim_feedforward: 10, activation: mish, norm_first: true}
  - transformer_encoder: {nhead: 1, activation: {swish: {beta: 2.0}}}
  - transformer_encoder: {nhead: 6, activation: GELU}
  - sequence_pool
"""
    net = build_sequence(text)
    first, second, third = (net[i].encoder for i in range(3))
    assert first.layers[0].linear1.out_features == 10
    assert isinstance(first.layers[0].activation, nn.Mish) and first.layers[0].norm_first
    assert isinstance(first.norm, nn.LayerNorm)  # pre-norm stacks end with a LayerNorm
    assert second.norm is None
    assert float(second.layers[0].activation.beta) == 2.0
    assert third.layers[0].activation_relu_or_gelu == 2  # torch's own gelu


@pytest.mark.parametrize(
    ("arguments", "key", "says"),
    [
        ("{nhead: 4}", "nhead", "must divide d_model = 6"),
        ("{nhead: 2, activation: batch_norm1d}", "activation", "valid: "),
        ("{nhead: 2, activation: none}", "activation", "mish"),
        ("{nhead: 2, dropout: 1.5}", "dropout", "[0, 1)"),
        ("{nhead: 2, heads: 2}", "", "'heads'"),
    ],
)
def test_transformer_arguments_are_checked_under_their_entry(arguments, key, says):
    error = sequence_error(f"layers:\n  - transformer_encoder: {arguments}\n  - sequence_pool\n")
    assert error.key == "layers[0].transformer_encoder" + (f".{key}" if key else "")
    assert says in str(error)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_positional_encoding_adds_a_code_per_step(kind):
    net = build_sequence(f"layers:\n  - positional_encoding: {{kind: {kind}}}\n  - sequence_pool\n")
    encoding = net.positional_encoding
    assert tuple(encoding.weight.shape) == SEQUENCE  # max_len and d_model read off the input
    x = torch.randn(SEQ_BATCH, *SEQUENCE)
    torch.testing.assert_close(encoding(x), x + encoding.weight)
    learned = kind == "learned"
    assert isinstance(encoding.weight, nn.Parameter) == learned
    assert ("positional_encoding.weight" in net.state_dict()) == learned
    if learned:
        # N(0, 1), as the nn.Embedding of the tokens it is added to
        assert 0.8 < float(encoding.weight.detach().std()) < 1.2


def test_sinusoids_follow_the_transformer_formula():
    table = sinusoids(50, 6)
    for t in (0, 1, 17, 49):
        for i in range(3):
            angle = t / 10000 ** (2 * i / 6)
            assert float(table[t, 2 * i]) == pytest.approx(math.sin(angle), abs=1e-6)
            assert float(table[t, 2 * i + 1]) == pytest.approx(math.cos(angle), abs=1e-6)
    assert sinusoids(4, 5).shape == (4, 5)  # odd widths too


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("mean", lambda x: x.mean(1)),
        ("max", lambda x: x.max(1).values),
        ("first", lambda x: x[:, 0]),
        ("last", lambda x: x[:, -1]),
    ],
)
def test_sequence_pool_modes(mode, reference):
    net = build_sequence(f"layers:\n  - sequence_pool: {{mode: {mode}}}\n")
    assert net.head.in_features == SEQUENCE[-1]
    x = torch.randn(SEQ_BATCH, *SEQUENCE)
    torch.testing.assert_close(net.sequence_pool(x), reference(x))


def test_a_token_transformer_builds_end_to_end():
    text = """
layers:
  - embedding: {embedding_dim: 8}
  - positional_encoding: {kind: sinusoidal}
  - transformer_encoder: {nhead: 2, num_layers: 2, dim_feedforward: 16}
  - sequence_pool: {mode: first}
"""
    net = build_tokens(text)
    assert net.positional_encoding.weight.shape == (SEQ_TOKENS[0], 8)
    assert net.transformer_encoder.encoder.layers[0].self_attn.embed_dim == 8
    out = net(tokens())
    assert out.shape == (SEQ_BATCH, NUM_OUTPUTS)
    out.sum().backward()
    assert net.embedding.weight.grad.abs().sum() > 0


# --- sequence, token and vision entries: linear on sequences, vision entries ----------------------


def test_linear_on_a_sequence_reads_the_last_dimension():
    net = build_sequence("layers:\n  - linear: {out_features: 4}\n  - sequence_pool\n")
    assert net.linear.in_features == SEQUENCE[-1]  # F, not T or T * F
    x = torch.randn(SEQ_BATCH, *SEQUENCE)
    assert net.linear(x).shape == (SEQ_BATCH, SEQUENCE[0], 4)
    assert net.head.in_features == 4


def test_upsample_and_conv_transpose2d_infer_their_shapes():
    text = """
layers:
  - upsample: {scale_factor: 2, mode: bilinear}
  - conv_transpose2d: {out_channels: 3, kernel_size: 2, stride: 2}
  - upsample: {size: [40, 40]}
  - flatten
"""
    net = build_sequence(text, SEQ_IMAGE)
    assert net.conv_transpose2d.in_channels == SEQ_IMAGE[0]
    x = torch.randn(SEQ_BATCH, *SEQ_IMAGE)
    assert net.upsample_1(x).shape == (SEQ_BATCH, 2, 16, 16)
    assert net.conv_transpose2d(net.upsample_1(x)).shape == (SEQ_BATCH, 3, 32, 32)
    assert net.head.in_features == 3 * 40 * 40
    torch.testing.assert_close(net.upsample_1(x), F.interpolate(x, scale_factor=2, mode="bilinear"))


def test_upsample_without_a_size_names_its_entry():
    error = sequence_error("layers:\n  - upsample\n  - flatten\n", SEQ_IMAGE)
    assert error.key == "layers[0]" and "upsample" in str(error)


# --- sequence, token and vision entries: residual blocks ------------------------------------------


def test_a_residual_block_adds_its_input():
    torch.manual_seed(0)
    net = build_sequence(
        "layers:\n  - residual:\n      - linear: {out_features: 6}\n      - tanh\n", (6,)
    )
    residual = net.residual
    assert isinstance(residual, Residual) and isinstance(residual.shortcut, nn.Identity)
    x = torch.randn(SEQ_BATCH, 6)
    linear = residual.block.linear
    expected = x + torch.tanh(x @ linear.weight.T + linear.bias)
    torch.testing.assert_close(residual(x), expected)
    torch.testing.assert_close(net(x), net.head(expected))


def test_a_residual_block_that_changes_the_features_projects_its_input():
    torch.manual_seed(0)
    net = build_sequence(
        "layers:\n  - residual: [{linear: {out_features: 4}}, relu]\n  - sequence_pool\n"
    )
    shortcut = net.residual.shortcut
    assert isinstance(shortcut, nn.Linear) and shortcut.bias is None
    assert (shortcut.in_features, shortcut.out_features) == (6, 4)
    x = torch.randn(SEQ_BATCH, *SEQUENCE)
    expected = x @ shortcut.weight.T + net.residual.block(x)
    torch.testing.assert_close(net.residual(x), expected)
    assert net(torch.randn(SEQ_BATCH, *SEQUENCE)).shape == (SEQ_BATCH, NUM_OUTPUTS)


def test_a_residual_conv_block_with_more_channels_projects_by_a_1x1_convolution():
    torch.manual_seed(0)
    text = """
layers:
  - residual:
      - conv2d: {out_channels: 5, kernel_size: 3, padding: 1}
      - batch_norm2d
      - relu
  - flatten
"""
    net = build_sequence(text, SEQ_IMAGE)
    shortcut = net.residual.shortcut
    assert isinstance(shortcut, nn.Conv2d) and shortcut.kernel_size == (1, 1)
    assert (shortcut.in_channels, shortcut.out_channels) == (2, 5)
    x = torch.randn(SEQ_BATCH, *SEQ_IMAGE)
    net.eval()
    projected = torch.einsum("oc,nchw->nohw", shortcut.weight[:, :, 0, 0], x)
    torch.testing.assert_close(net.residual(x), projected + net.residual.block(x))
    assert net.head.in_features == 5 * 8 * 8


def test_residual_blocks_repeat_resnet_style_with_drop_path():
    text = """
layers:
  - conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
  - repeat: 2
    block:
      - residual:
          - conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
          - batch_norm2d
          - relu
          - conv2d: {out_channels: 4, kernel_size: 3, padding: 1}
        drop_path: 0.5
      - relu
  - adaptive_avg_pool2d: {output_size: 1}
  - flatten
"""
    net = build_sequence(text, SEQ_IMAGE)
    for block in (net.block_1, net.block_2):
        assert isinstance(block.residual, Residual)
        assert isinstance(block.residual.drop_path, DropPath)
        assert block.residual.drop_path.p == 0.5
        assert block.residual.block.conv2d_1.in_channels == 4
    assert net.block_1.residual is not net.block_2.residual
    assert net.head.in_features == 4
    # In eval mode the drop path is the identity: input + block(input) exactly.
    net.eval()
    x = torch.randn(SEQ_BATCH, 4, 8, 8)
    residual = net.block_1.residual
    torch.testing.assert_close(residual(x), x + residual.block(x))


def test_drop_path_in_training_drops_the_branch_per_sample():
    torch.manual_seed(0)
    net = build_sequence(
        "layers:\n  - residual: [{linear: {out_features: 6}}]\n    drop_path: 0.5\n", (6,)
    )
    residual = net.residual
    x = torch.randn(400, 6)
    branch = residual.block(x)
    out = residual(x)  # training mode
    dropped = torch.isclose(out, x).all(1)
    kept = torch.isclose(out, x + 2 * branch).all(1)  # kept branches are scaled by 1 / (1 - p)
    assert bool((dropped | kept).all())
    assert 120 < int(dropped.sum()) < 280


def test_a_residual_block_on_tokens_needs_the_embedding_before_it():
    text = """
layers:
  - embedding: {embedding_dim: 6}
  - residual:
      - transformer_encoder: {nhead: 2, dim_feedforward: 8}
      - lstm: {hidden_size: 6, output: sequence}
  - sequence_pool
"""
    net = build_tokens(text)
    assert isinstance(net.residual.shortcut, nn.Identity)
    assert net.residual.block.lstm.rnn.input_size == 6
    assert net(tokens()).shape == (SEQ_BATCH, NUM_OUTPUTS)


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        (
            "layers:\n  - residual: [{conv2d: {out_channels: 2, kernel_size: 3}}]\n  - flatten\n",
            "layers[0].residual",
            "spatial size",
        ),
        (
            "layers:\n  - residual: [{max_pool2d: {kernel_size: 2}}]\n  - flatten\n",
            "layers[0].residual",
            "(2, 8, 8) to (2, 4, 4)",
        ),
        (
            "layers:\n  - repeat: 1\n    block:\n      - residual: [flatten]\n",
            "layers[0].block[0].residual",
            "number of dimensions",
        ),
        ("layers:\n  - residual: []\n  - flatten\n", "layers[0].residual", "non-empty"),
        (
            "layers:\n  - residual: [relu]\n    drop_path: 1.0\n  - flatten\n",
            "layers[0].drop_path",
            "[0, 1)",
        ),
        (
            "layers:\n  - residual: [relu]\n    dropath: 0.1\n  - flatten\n",
            "layers[0]",
            "'dropath'",
        ),
        ("layers:\n  - residual: [relu, reluu]\n  - flatten\n", "layers[0].residual[1]", "'reluu'"),
    ],
)
def test_bad_residual_blocks_name_their_entry(text, key, says):
    error = sequence_error(text, SEQ_IMAGE)
    assert error.key == key and says in str(error)


def test_a_residual_block_that_changes_the_steps_is_refused():
    error = sequence_error("layers:\n  - residual: [sequence_pool]\n")
    assert error.key == "layers[0].residual" and "number of dimensions" in str(error)


# --- sequence, token and vision entries: misuses: one line naming the entry -----------------------


@pytest.mark.parametrize(
    "layer", ["lstm: {hidden_size: 4}", "gru: {hidden_size: 4}", "transformer_encoder: {nhead: 1}"]
)
def test_sequence_layers_after_flatten_are_refused(layer):
    name = layer.split(":")[0]
    error = sequence_error(f"layers:\n  - flatten\n  - {layer}\n")
    assert error.key == "layers[1]"
    assert str(error).startswith(f"layers[1]: {name} needs (steps, features) sequences")
    assert "(42,)" in str(error) and "flatten" in str(error)


def test_sequence_layers_on_images_are_refused():
    error = sequence_error("layers:\n  - lstm: {hidden_size: 4}\n", SEQ_IMAGE)
    assert error.key == "layers[0]" and "(2, 8, 8)" in str(error)
    assert "data.layout=sequence" in str(error)


def test_an_embedding_on_float_inputs_is_refused():
    error = sequence_error("layers:\n  - embedding: {embedding_dim: 4, num_embeddings: 10}\n")
    assert error.key == "layers[0]"
    assert "embedding takes integer token ids" in str(error) and "float32" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "layer"),
    [
        ("layers:\n  - linear: {out_features: 4}\n  - sequence_pool\n", "layers[0]", "linear"),
        ("layers:\n  - flatten\n  - dropout\n", "layers[1]", "dropout"),
        ("layers:\n  - residual: [identity, relu]\n  - flatten\n", "layers[0].residual[1]", "relu"),
        ("layers:\n  - flatten\n", "head", "linear"),
    ],
)
def test_integer_inputs_need_an_embedding_first(text, key, layer):
    with pytest.raises(ConfigError) as info:
        build_tokens(text)
    error = info.value
    assert error.key == key and "\n" not in str(error)
    assert f"{layer} needs float inputs, got integer token ids" in str(error)
    assert "embedding" in str(error)


def test_dtype_is_tracked_through_flatten_and_identity():
    net = build_tokens(
        "layers:\n  - identity\n  - flatten\n  - embedding: {embedding_dim: 3}\n  - flatten\n"
    )
    assert net.head.in_features == SEQ_TOKENS[0] * 3
    assert net(tokens()).shape == (SEQ_BATCH, NUM_OUTPUTS)


def test_a_plugin_layer_returning_a_tuple_is_named():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    register_layer("pair_test", Pair)
    try:
        error = sequence_error("layers:\n  - pair_test\n")
        assert error.key == "layers[0]" and "returns tuple" in str(error)
    finally:
        LAYERS.unregister("pair_test")


def test_a_plugin_infer_function_may_read_the_vocabulary_and_dtype():
    seen = {}

    class Table(nn.Embedding):
        pass

    def infer(shape, *, vocab_size, dtype):
        seen.update(shape=shape, vocab_size=vocab_size, dtype=dtype)
        return {"num_embeddings": vocab_size + 1}

    register_layer("table_test", Table, infer, kind="embedding", inputs="integer")
    try:
        net = build_tokens("layers:\n  - table_test: {embedding_dim: 2}\n  - flatten\n")
    finally:
        LAYERS.unregister("table_test")
    assert seen == {"shape": SEQ_TOKENS, "vocab_size": SEQ_VOCAB, "dtype": torch.int64}
    assert net.table_test.num_embeddings == SEQ_VOCAB + 1


def test_register_layer_checks_what_a_layer_takes():
    with pytest.raises(ConfigError) as info:
        register_layer("bad_test", nn.Identity, inputs="ints")
    assert info.value.key == "inputs"
    with pytest.raises(ConfigError) as info:
        register_layer("bad_test", nn.Identity, ndim=0)
    assert info.value.key == "ndim"
    assert "bad_test" not in LAYERS


# --- sequence, token and vision entries: outputs that are not class scores ------------------------


def test_head_false_compares_with_the_output_shape():
    text = "layers:\n  - conv2d: {out_channels: 2, kernel_size: 3, padding: 1}\nhead: false\n"
    net = build_sequence(text, SEQ_IMAGE, 128, output_shape=SEQ_IMAGE)
    assert net(torch.randn(SEQ_BATCH, *SEQ_IMAGE)).shape == (SEQ_BATCH, *SEQ_IMAGE)
    error = sequence_error(text, SEQ_IMAGE, output_shape=(1, 8, 8))
    assert error.key == "head" and "needs (1, 8, 8)" in str(error)


def test_a_linear_head_cannot_give_an_image():
    error = sequence_error("layers: [flatten]\n", SEQ_IMAGE, output_shape=(1, 8, 8))
    assert error.key == "head" and "head: false" in str(error)


def test_the_default_head_after_a_sequence_keeps_its_error():
    error = sequence_error("layers:\n  - lstm: {hidden_size: 4, output: sequence}\n")
    assert error.key == "layers" and "(7, 4)" in str(error) and "sequence_pool" in str(error)


# --- sequence, token and vision entries: the ready models -----------------------------------------


def _model(name: str) -> dict:
    config = OmegaConf.create({"model": OmegaConf.load(CONF / f"{name}.yaml")})
    return OmegaConf.to_container(config.model, resolve=True)


@pytest.mark.parametrize(
    ("name", "shape", "data", "outputs", "module"),
    [
        ("lstm_net", (8, 8), {}, (10,), nn.LSTM),
        ("gru_net", (8, 8), {}, (10,), nn.GRU),
        (
            "transformer_net",
            (64,),
            {"input_dtype": torch.int64, "vocab_size": 17},
            (10,),
            nn.MultiheadAttention,
        ),
        ("resnet", (1, 8, 8), {}, (10,), Residual),
        ("conv_autoencoder", (1, 8, 8), {"output_shape": (1, 8, 8)}, (1, 8, 8), nn.Upsample),
    ],
)
def test_the_sequence_and_vision_models_build_for_their_data(name, shape, data, outputs, module):
    torch.manual_seed(0)
    net = build_net(_model(name), shape, math.prod(outputs), **data)
    assert any(isinstance(m, module) for m in net.modules())
    if data.get("input_dtype") == torch.int64:
        x = torch.randint(0, data["vocab_size"], (SEQ_BATCH, *shape))
    else:
        x = torch.randn(SEQ_BATCH, *shape)
    out = net(x)
    assert out.shape == (SEQ_BATCH, *outputs)
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_recurrent_models_put_dropout_between_their_layers():
    for name, kind in (("lstm_net", "lstm"), ("gru_net", "gru")):
        spec = _model(name)
        net = build_net(spec, (8, 8), 10)
        rnn = getattr(net, kind).rnn
        assert rnn.num_layers == spec["depth"] >= 2
        assert rnn.dropout == spec["dropout"] > 0
        assert rnn.hidden_size == spec["width"]
