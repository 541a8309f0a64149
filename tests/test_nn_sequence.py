"""Sequence, token and vision entries of the catalogue and residual blocks: shapes and dtypes
inferred through the builder's dry forward pass (also inside `repeat` and `residual`), outputs
against hand-written references, the ready models of conf/model, and one-line errors naming the
spec entry for every misuse."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from reglab.errors import ConfigError
from reglab.nn import LAYERS, build_net, register_layer
from reglab.nn.drop_path import DropPath
from reglab.nn.residual import Residual
from reglab.nn.sequence import sinusoids

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
BATCH = 5
NUM_OUTPUTS = 3
SEQUENCE = (7, 6)  # 7 steps of 6 features
TOKENS = (12,)  # 12 token ids
VOCAB = 9
IMAGE = (2, 8, 8)


def spec_from_yaml(text: str) -> dict:
    """A model spec as Hydra hands it over: YAML -> OmegaConf -> plain container."""
    return OmegaConf.to_container(OmegaConf.create(text), resolve=True)


def build(text: str, input_shape=SEQUENCE, num_outputs: int = NUM_OUTPUTS, **data) -> nn.Sequential:
    return build_net(spec_from_yaml(text), input_shape, num_outputs, **data)


def build_tokens(text: str, num_outputs: int = NUM_OUTPUTS) -> nn.Sequential:
    return build(text, TOKENS, num_outputs, input_dtype=torch.int64, vocab_size=VOCAB)


def config_error(text: str, input_shape=SEQUENCE, **data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build(text, input_shape, **data)
    assert "\n" not in str(info.value)  # one line
    return info.value


def tokens(batch: int = BATCH) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, *TOKENS))


# --- embedding ----------------------------------------------------------------------------------


def test_embedding_reads_the_vocabulary_and_turns_ids_into_vectors():
    net = build_tokens("layers:\n  - embedding: {embedding_dim: 4, padding_idx: 0}\n  - flatten\n")
    assert isinstance(net.embedding, nn.Embedding)
    assert net.embedding.num_embeddings == VOCAB and net.embedding.embedding_dim == 4
    assert net.embedding.padding_idx == 0
    assert net.head.in_features == TOKENS[0] * 4
    ids = tokens()
    vectors = net.embedding(ids)
    assert vectors.shape == (BATCH, *TOKENS, 4) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors, net.embedding.weight[ids])
    assert net(ids).shape == (BATCH, NUM_OUTPUTS)


def test_embedding_without_a_vocabulary_needs_num_embeddings():
    spec = spec_from_yaml("layers:\n  - embedding: {embedding_dim: 4}\n  - flatten\n")
    with pytest.raises(ConfigError) as info:
        build_net(spec, TOKENS, NUM_OUTPUTS, input_dtype=torch.int64)
    assert info.value.key == "layers[0].embedding" and "num_embeddings" in str(info.value)
    spec["layers"][0]["embedding"]["num_embeddings"] = 20
    net = build_net(spec, TOKENS, NUM_OUTPUTS, input_dtype=torch.int64)
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


# --- LSTM and GRU -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_layers_wrap_the_torch_module_batch_first(kind):
    net = build(f"layers:\n  - {kind}: {{hidden_size: 5, num_layers: 2, dropout: 0.25}}\n")
    rnn = getattr(net, kind).rnn
    assert type(rnn) is {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
    assert rnn.input_size == SEQUENCE[-1] and rnn.hidden_size == 5 and rnn.num_layers == 2
    assert rnn.batch_first and rnn.dropout == 0.25
    names = dict(net.named_parameters())
    assert f"{kind}.rnn.weight_ih_l0" in names and f"{kind}.rnn.weight_hh_l1" in names
    assert net.head.in_features == 5
    assert net(torch.randn(BATCH, *SEQUENCE)).shape == (BATCH, NUM_OUTPUTS)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_outputs_match_the_torch_module(kind, bidirectional):
    torch.manual_seed(0)
    x = torch.randn(BATCH, *SEQUENCE)
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
    assert steps.shape == (BATCH, SEQUENCE[0], width)
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
    net = build(text)
    assert net.block_1.lstm.rnn.input_size == SEQUENCE[-1]
    assert net.block_2.lstm.rnn.input_size == 8  # both directions of the first
    assert net.gru.rnn.input_size == 8
    assert net.head.in_features == 3
    assert net(torch.randn(BATCH, *SEQUENCE)).shape == (BATCH, NUM_OUTPUTS)


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
    error = config_error(f"layers:\n  - lstm: {arguments}\n")
    assert error.key == "layers[0].lstm" + (f".{key}" if key else "")
    if not key:
        assert "missing required" in str(error) and "hidden_size" in str(error)


# --- transformer encoder, positional encoding, sequence pooling -------------------------------


def test_transformer_encoder_infers_d_model_and_holds_torch_modules():
    text = "layers:\n  - transformer_encoder: {nhead: 2, num_layers: 3, dropout: 0.2}\n  - sequence_pool\n"
    net = build(text)
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
    x = torch.randn(BATCH, *SEQUENCE)
    net.eval()
    torch.testing.assert_close(net.transformer_encoder(x), encoder(x))
    assert net(x).shape == (BATCH, NUM_OUTPUTS)


def test_transformer_encoder_options():
    text = """
layers:
  - transformer_encoder: {nhead: 3, dim_feedforward: 10, activation: mish, norm_first: true}
  - transformer_encoder: {nhead: 1, activation: {swish: {beta: 2.0}}}
  - transformer_encoder: {nhead: 6, activation: GELU}
  - sequence_pool
"""
    net = build(text)
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
    error = config_error(f"layers:\n  - transformer_encoder: {arguments}\n  - sequence_pool\n")
    assert error.key == "layers[0].transformer_encoder" + (f".{key}" if key else "")
    assert says in str(error)


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_positional_encoding_adds_a_code_per_step(kind):
    net = build(f"layers:\n  - positional_encoding: {{kind: {kind}}}\n  - sequence_pool\n")
    encoding = net.positional_encoding
    assert tuple(encoding.weight.shape) == SEQUENCE  # max_len and d_model read off the input
    x = torch.randn(BATCH, *SEQUENCE)
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
    net = build(f"layers:\n  - sequence_pool: {{mode: {mode}}}\n")
    assert net.head.in_features == SEQUENCE[-1]
    x = torch.randn(BATCH, *SEQUENCE)
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
    assert net.positional_encoding.weight.shape == (TOKENS[0], 8)
    assert net.transformer_encoder.encoder.layers[0].self_attn.embed_dim == 8
    out = net(tokens())
    assert out.shape == (BATCH, NUM_OUTPUTS)
    out.sum().backward()
    assert net.embedding.weight.grad.abs().sum() > 0


# --- linear on sequences, vision entries --------------------------------------------------------


def test_linear_on_a_sequence_reads_the_last_dimension():
    net = build("layers:\n  - linear: {out_features: 4}\n  - sequence_pool\n")
    assert net.linear.in_features == SEQUENCE[-1]  # F, not T or T * F
    x = torch.randn(BATCH, *SEQUENCE)
    assert net.linear(x).shape == (BATCH, SEQUENCE[0], 4)
    assert net.head.in_features == 4


def test_upsample_and_conv_transpose2d_infer_their_shapes():
    text = """
layers:
  - upsample: {scale_factor: 2, mode: bilinear}
  - conv_transpose2d: {out_channels: 3, kernel_size: 2, stride: 2}
  - upsample: {size: [40, 40]}
  - flatten
"""
    net = build(text, IMAGE)
    assert net.conv_transpose2d.in_channels == IMAGE[0]
    x = torch.randn(BATCH, *IMAGE)
    assert net.upsample_1(x).shape == (BATCH, 2, 16, 16)
    assert net.conv_transpose2d(net.upsample_1(x)).shape == (BATCH, 3, 32, 32)
    assert net.head.in_features == 3 * 40 * 40
    torch.testing.assert_close(net.upsample_1(x), F.interpolate(x, scale_factor=2, mode="bilinear"))


def test_upsample_without_a_size_names_its_entry():
    error = config_error("layers:\n  - upsample\n  - flatten\n", IMAGE)
    assert error.key == "layers[0]" and "upsample" in str(error)


# --- residual blocks ----------------------------------------------------------------------------


def test_a_residual_block_adds_its_input():
    torch.manual_seed(0)
    net = build("layers:\n  - residual:\n      - linear: {out_features: 6}\n      - tanh\n", (6,))
    residual = net.residual
    assert isinstance(residual, Residual) and isinstance(residual.shortcut, nn.Identity)
    x = torch.randn(BATCH, 6)
    linear = residual.block.linear
    expected = x + torch.tanh(x @ linear.weight.T + linear.bias)
    torch.testing.assert_close(residual(x), expected)
    torch.testing.assert_close(net(x), net.head(expected))


def test_a_residual_block_that_changes_the_features_projects_its_input():
    torch.manual_seed(0)
    net = build("layers:\n  - residual: [{linear: {out_features: 4}}, relu]\n  - sequence_pool\n")
    shortcut = net.residual.shortcut
    assert isinstance(shortcut, nn.Linear) and shortcut.bias is None
    assert (shortcut.in_features, shortcut.out_features) == (6, 4)
    x = torch.randn(BATCH, *SEQUENCE)
    expected = x @ shortcut.weight.T + net.residual.block(x)
    torch.testing.assert_close(net.residual(x), expected)
    assert net(torch.randn(BATCH, *SEQUENCE)).shape == (BATCH, NUM_OUTPUTS)


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
    net = build(text, IMAGE)
    shortcut = net.residual.shortcut
    assert isinstance(shortcut, nn.Conv2d) and shortcut.kernel_size == (1, 1)
    assert (shortcut.in_channels, shortcut.out_channels) == (2, 5)
    x = torch.randn(BATCH, *IMAGE)
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
    net = build(text, IMAGE)
    for block in (net.block_1, net.block_2):
        assert isinstance(block.residual, Residual)
        assert isinstance(block.residual.drop_path, DropPath)
        assert block.residual.drop_path.p == 0.5
        assert block.residual.block.conv2d_1.in_channels == 4
    assert net.block_1.residual is not net.block_2.residual
    assert net.head.in_features == 4
    # In eval mode the drop path is the identity: input + block(input) exactly.
    net.eval()
    x = torch.randn(BATCH, 4, 8, 8)
    residual = net.block_1.residual
    torch.testing.assert_close(residual(x), x + residual.block(x))


def test_drop_path_in_training_drops_the_branch_per_sample():
    torch.manual_seed(0)
    net = build("layers:\n  - residual: [{linear: {out_features: 6}}]\n    drop_path: 0.5\n", (6,))
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
    assert net(tokens()).shape == (BATCH, NUM_OUTPUTS)


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
    error = config_error(text, IMAGE)
    assert error.key == key and says in str(error)


def test_a_residual_block_that_changes_the_steps_is_refused():
    error = config_error("layers:\n  - residual: [sequence_pool]\n")
    assert error.key == "layers[0].residual" and "number of dimensions" in str(error)


# --- misuses: one line naming the entry -------------------------------------------------------


@pytest.mark.parametrize(
    "layer", ["lstm: {hidden_size: 4}", "gru: {hidden_size: 4}", "transformer_encoder: {nhead: 1}"]
)
def test_sequence_layers_after_flatten_are_refused(layer):
    name = layer.split(":")[0]
    error = config_error(f"layers:\n  - flatten\n  - {layer}\n")
    assert error.key == "layers[1]"
    assert str(error).startswith(f"layers[1]: {name} needs (steps, features) sequences")
    assert "(42,)" in str(error) and "flatten" in str(error)


def test_sequence_layers_on_images_are_refused():
    error = config_error("layers:\n  - lstm: {hidden_size: 4}\n", IMAGE)
    assert error.key == "layers[0]" and "(2, 8, 8)" in str(error)
    assert "data.layout=sequence" in str(error)


def test_an_embedding_on_float_inputs_is_refused():
    error = config_error("layers:\n  - embedding: {embedding_dim: 4, num_embeddings: 10}\n")
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
    assert net.head.in_features == TOKENS[0] * 3
    assert net(tokens()).shape == (BATCH, NUM_OUTPUTS)


def test_a_plugin_layer_returning_a_tuple_is_named():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    register_layer("pair_test", Pair)
    try:
        error = config_error("layers:\n  - pair_test\n")
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
    assert seen == {"shape": TOKENS, "vocab_size": VOCAB, "dtype": torch.int64}
    assert net.table_test.num_embeddings == VOCAB + 1


def test_register_layer_checks_what_a_layer_takes():
    with pytest.raises(ConfigError) as info:
        register_layer("bad_test", nn.Identity, inputs="ints")
    assert info.value.key == "inputs"
    with pytest.raises(ConfigError) as info:
        register_layer("bad_test", nn.Identity, ndim=0)
    assert info.value.key == "ndim"
    assert "bad_test" not in LAYERS


# --- outputs that are not class scores --------------------------------------------------------


def test_head_false_compares_with_the_output_shape():
    text = "layers:\n  - conv2d: {out_channels: 2, kernel_size: 3, padding: 1}\nhead: false\n"
    net = build(text, IMAGE, 128, output_shape=IMAGE)
    assert net(torch.randn(BATCH, *IMAGE)).shape == (BATCH, *IMAGE)
    error = config_error(text, IMAGE, output_shape=(1, 8, 8))
    assert error.key == "head" and "needs (1, 8, 8)" in str(error)


def test_a_linear_head_cannot_give_an_image():
    error = config_error("layers: [flatten]\n", IMAGE, output_shape=(1, 8, 8))
    assert error.key == "head" and "head: false" in str(error)


def test_the_default_head_after_a_sequence_keeps_its_error():
    error = config_error("layers:\n  - lstm: {hidden_size: 4, output: sequence}\n")
    assert error.key == "layers" and "(7, 4)" in str(error) and "sequence_pool" in str(error)


# --- the ready models ---------------------------------------------------------------------------


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
        x = torch.randint(0, data["vocab_size"], (BATCH, *shape))
    else:
        x = torch.randn(BATCH, *shape)
    out = net(x)
    assert out.shape == (BATCH, *outputs)
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
