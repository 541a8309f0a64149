"""Stacked LSTM and GRU (reglab's `lstm` and `gru` layers): the recurrence written out over the
steps, each step one batched matmul for all members.

torch.func cannot map nn.LSTM/nn.GRU (no batching rule for aten::lstm/gru), so the stacked form
computes torch's equations itself: per layer and direction, the input projections of all steps
in one batched matmul, then per step h @ W_hh^T for all members at once (LSTM gates i, f, g, o;
GRU gates r, z, n, as torch orders them). Parameters keep torch's names under `rnn`
(`rnn.weight_ih_l0`, `rnn.bias_hh_l1_reverse`) as [K, *shape]. The dropout between stacked
layers is a stacked nn.Dropout child (`between`), so each member draws its own masks at its own
rate, and dropout schedules reach it as a dropout layer. LSTM projections (`proj_size`) have no
stacked form.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reglab.nn.sequence import GRU, LSTM, pool_steps
from reglab.stack.dropout import stack_dropout
from reglab.stack.layers import (
    NotStackable,
    describe,
    same_settings,
    stack_parameter,
    stacker,
)


class StackedRecurrent(nn.Module):
    """K LSTM or GRU members (reglab's wrappers, batch first): [K, B, T, F] -> [K, B, D * H] (or
    [K, B, T, D * H] for `output: sequence`)."""

    def __init__(self, members: list[nn.Module], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        rnns = [m.rnn for m in members]
        first = rnns[0]
        shapes = {_shape(r) for r in rnns}  # the dropout rate between layers may differ
        if len(shapes) > 1:
            raise NotStackable(
                f"{path}.rnn ({describe(type(first))}) differs across members: {sorted(shapes)}"
            )
        if getattr(first, "proj_size", 0):
            raise NotStackable(
                f"{path} ({describe(type(members[0]))}) with proj_size has no stacked form"
            )
        self.output = members[0].output
        self.lstm = isinstance(first, nn.LSTM)
        self.num_layers, self.hidden_size = first.num_layers, first.hidden_size
        self.bidirectional = first.bidirectional
        self.rnn = nn.Module()
        for name, _ in first.named_parameters():
            self.rnn.register_parameter(name, stack_parameter(rnns, name, f"{path}.rnn"))
        between = [nn.Dropout(r.dropout if r.num_layers > 1 else 0.0) for r in rnns]
        self.between = stack_dropout(between, f"{path}.between")

    def forward(self, x: Tensor) -> Tensor:
        """Each member's recurrence over the steps, then its output mode."""
        for layer in range(self.num_layers):
            directions = (False, True) if self.bidirectional else (False,)
            x = torch.cat([self._direction(x, layer, reverse) for reverse in directions], dim=-1)
            if layer < self.num_layers - 1:
                x = self.between(x)
        if self.output == "sequence":
            return x
        if self.output == "last" and self.bidirectional:
            # The backward direction ends at the first step: its final state sits at t = 0.
            hidden = self.hidden_size
            return torch.cat([x[:, :, -1, :hidden], x[:, :, 0, hidden:]], dim=-1)
        members, batch = x.shape[:2]
        return pool_steps(x.reshape(members * batch, *x.shape[2:]), self.output).reshape(
            members, batch, -1
        )

    def _direction(self, x: Tensor, layer: int, reverse: bool) -> Tensor:
        """[K, B, T, F] -> [K, B, T, H]: one layer's states in one direction."""
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih, w_hh = (
            getattr(self.rnn, f"weight_ih{suffix}"),
            getattr(self.rnn, f"weight_hh{suffix}"),
        )
        b_ih = getattr(self.rnn, f"bias_ih{suffix}", None)
        b_hh = getattr(self.rnn, f"bias_hh{suffix}", None)
        members, batch, steps, features = x.shape
        flat = x.reshape(members, batch * steps, features)
        projected = _affine(flat, w_ih, b_ih).reshape(members, batch, steps, -1)
        h = x.new_zeros(members, batch, self.hidden_size)
        c = torch.zeros_like(h)
        states: list[Tensor] = [h] * steps
        for t in reversed(range(steps)) if reverse else range(steps):
            recurrent = _affine(h, w_hh, b_hh)
            if self.lstm:
                i, f, g, o = (projected[:, :, t] + recurrent).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                r_x, z_x, n_x = projected[:, :, t].chunk(3, dim=-1)
                r_h, z_h, n_h = recurrent.chunk(3, dim=-1)
                r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
                n = torch.tanh(n_x + r * n_h)
                h = (1 - z) * n + z * h
            states[t] = h
        return torch.stack(states, dim=2)


def _shape(rnn: nn.RNNBase) -> tuple:
    return (rnn.mode, rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias,
            rnn.batch_first, rnn.bidirectional, rnn.proj_size)  # fmt: skip


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x @ weight^T + bias for every member: [K, N, in] -> [K, N, out]."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


stacker(LSTM, GRU)(StackedRecurrent)
