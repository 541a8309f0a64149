"""Layers over sequences (N, T, F), batch first: LSTM, GRU, a Transformer encoder, positional
encodings and pooling over the steps.

The recurrent and transformer entries wrap the torch modules instead of re-implementing them, and
keep them reachable as submodules (`lstm.rnn` is the `nn.LSTM`, `transformer_encoder.encoder` the
`nn.TransformerEncoder`): penalties see `weight_ih_l0`/`weight_hh_l0` and the attention
projections, dropout control sees `nn.LSTM.dropout` and every `nn.MultiheadAttention`. Each wrapper
returns one tensor, so the next layer of a spec can take it: an LSTM's `output` picks the last
step, the mean or max over the steps, or the whole sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reglab import checks
from reglab.errors import ConfigError
from reglab.nn.registry import LAYERS, Shape, layer

RECURRENT_OUTPUTS = ("last", "mean", "max", "sequence")
POOL_MODES = ("mean", "max", "last", "first")
POSITIONAL_KINDS = ("learned", "sinusoidal")
# Activations torch's encoder layer takes by name (they keep its fused fast path in eval).
TORCH_ACTIVATIONS = ("relu", "gelu")


def _features_last(shape: Shape) -> dict:
    return {"input_size": shape[-1]}


def _model_width(shape: Shape) -> dict:
    return {"d_model": shape[-1]}


def _positions(shape: Shape) -> dict:
    steps, features = shape
    return {"max_len": steps, "d_model": features}


def pool_steps(x: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, T, F) -> (N, F): the mean or max over the steps, or the first or last step."""
    if mode == "mean":
        return x.mean(dim=1)
    if mode == "max":
        return x.amax(dim=1)
    return x[:, 0] if mode == "first" else x[:, -1]


class Recurrent(nn.Module):
    """A batch-first `rnn_class` (nn.LSTM, nn.GRU) as `self.rnn`, its output reduced by `output`."""

    rnn_class: type[nn.RNNBase]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        bidirectional: bool = False,
        bias: bool = True,
        output: str = "last",
    ) -> None:
        super().__init__()
        checks.integer("hidden_size", hidden_size, minimum=1)
        checks.integer("num_layers", num_layers, minimum=1)
        # torch applies it between stacked layers only (and warns when there is one layer).
        checks.probability("dropout", dropout, allow_one=False)
        checks.boolean("bidirectional", bidirectional)
        self.output = checks.choice("output", output, RECURRENT_OUTPUTS)
        self.rnn = self.rnn_class(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=True,
            dropout=dropout,
            bidirectional=bidirectional,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, F) -> (N, T, D * H) for `sequence`, else (N, D * H) (D = 2 if bidirectional)."""
        steps = self.rnn(x)[0]
        if self.output == "sequence":
            return steps
        if self.output == "last" and self.rnn.bidirectional:
            # The backward direction ends at the first step: its final state sits at t = 0.
            hidden = self.rnn.hidden_size
            return torch.cat([steps[:, -1, :hidden], steps[:, 0, hidden:]], dim=-1)
        return pool_steps(steps, self.output)

    def extra_repr(self) -> str:
        """The output mode beside the wrapped module in `print(model)`."""
        return f"output={self.output}"


@layer("lstm", _features_last, kind="recurrent", ndim=2)
class LSTM(Recurrent):
    """nn.LSTM (batch first) yielding one tensor: the last step, mean, max or the sequence."""

    rnn_class = nn.LSTM


@layer("gru", _features_last, kind="recurrent", ndim=2)
class GRU(Recurrent):
    """nn.GRU (batch first) yielding one tensor: the last step, mean, max or the sequence."""

    rnn_class = nn.GRU


def encoder_activation(value: object) -> str | nn.Module:
    """The encoder layer's activation: relu/gelu by name (torch's own), else a catalogue activation
    module, named as a model's `activation` knob is (`mish`, `{swish: {beta: 2}}`)."""
    if isinstance(value, str) and value.lower() in TORCH_ACTIVATIONS:
        return value.lower()
    name, kwargs = (
        next(iter(value.items())) if isinstance(value, dict) and len(value) == 1 else (value, {})
    )
    entry = LAYERS.find(name)
    if entry is None or entry.kind != "activation":
        checks.choice("activation", value, LAYERS.names(where=lambda e: e.kind == "activation"))
    checks.arguments("activation", entry.cls, checks.mapping("activation", kwargs))
    return entry.cls(**kwargs)


@layer("transformer_encoder", _model_width, kind="attention", ndim=2)
class TransformerEncoder(nn.Module):
    """nn.TransformerEncoder of `num_layers` batch-first nn.TransformerEncoderLayer, as `self.encoder`.

    `dim_feedforward` defaults to 4 * d_model (the Transformer paper's 512 -> 2048) rather than
    torch's fixed 2048. Pre-norm stacks (`norm_first`) end with a LayerNorm, as ViT and GPT-2 do:
    their residual stream is otherwise never normalized.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int = 1,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
        activation: str | dict = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        checks.integer("nhead", nhead, minimum=1)
        if d_model % nhead:
            raise ConfigError("nhead", f"must divide d_model = {d_model}, got {nhead}")
        checks.integer("num_layers", num_layers, minimum=1)
        if dim_feedforward is not None:
            checks.integer("dim_feedforward", dim_feedforward, minimum=1)
        checks.probability("dropout", dropout, allow_one=False)
        checks.boolean("norm_first", norm_first)
        encoder_layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward or 4 * d_model,
            dropout,
            activation=encoder_activation(activation),
            layer_norm_eps=layer_norm_eps,
            batch_first=True,
            norm_first=norm_first,
            bias=bias,
        )
        final_norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if norm_first else None
        # Nested tensors only pay off with padding masks, which these nets do not use; asking for
        # them warns whenever the layer cannot use them (norm_first, custom activations).
        self.encoder = nn.TransformerEncoder(
            encoder_layer, num_layers, norm=final_norm, enable_nested_tensor=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, d_model) -> (N, T, d_model)."""
        return self.encoder(x)


@layer("positional_encoding", _positions, kind="embedding", ndim=2)
class PositionalEncoding(nn.Module):
    """Adds a position code to each step of (N, T, d_model): learned (a table `weight` of
    max_len x d_model) or the Transformer paper's sinusoids (fixed).

    The learned table starts N(0, 1) as nn.Embedding's does: the scale of the token embedding it
    is added to (BERT's 0.02 would leave the positions almost invisible next to it).
    """

    def __init__(self, max_len: int, d_model: int, kind: str = "learned") -> None:
        super().__init__()
        self.kind = checks.choice("kind", kind, POSITIONAL_KINDS)
        if kind == "learned":
            self.weight = nn.Parameter(torch.randn(max_len, d_model))
        else:
            # A function of the position: rebuilt, not saved in checkpoints.
            self.register_buffer("weight", sinusoids(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + the code of each step (sequences up to max_len steps)."""
        return x + self.weight[: x.shape[1]]

    def extra_repr(self) -> str:
        """Table size and kind in `print(model)`."""
        return f"max_len={self.weight.shape[0]}, d_model={self.weight.shape[1]}, kind={self.kind}"


def sinusoids(max_len: int, d_model: int) -> torch.Tensor:
    """PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d)): (max_len, d_model)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return table


@layer("sequence_pool", kind="pool", ndim=2)
class SequencePool(nn.Module):
    """(N, T, F) -> (N, F): the mean or max over the steps, or the first or last step."""

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        self.mode = checks.choice("mode", mode, POOL_MODES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool the steps away."""
        return pool_steps(x, self.mode)

    def extra_repr(self) -> str:
        """The mode in `print(model)`."""
        return f"mode={self.mode}"
