"""The layer catalogue and the net builder: every registered layer builds, runs forward and
backward from a YAML spec; Swish, Mish and the gated block match hand-written references; shape
inference, init schemes, BatchNorm statistics and the builder's errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import reglab.nn
from reglab.errors import ConfigError
from reglab.nn import build_net, get_layer, layer_names
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
