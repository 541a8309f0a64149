"""Stacked Linear, Embedding and positional-encoding layers: per-member weight tables in one tensor.

Linear keeps `weight` as [K, out, in] and `bias` as [K, out] and computes all members with one
batched matmul (`torch.baddbmm`: bias + weight @ x^T per member; inputs [K, B, ..., in]).
Embedding keeps `weight` as [K, V, D] and looks member k's ids up in its own table (one lookup in
the [K*V, D] view, ids offset by k*V; ids outside [0, V) raise as the member's lookup does).
A learned positional table is [K, T, D]; the fixed sinusoids are shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reglab.nn.sequence import PositionalEncoding
from reglab.stack.layers import (
    NotStackable,
    describe,
    same_settings,
    stack_parameter,
    stacker,
)


class StackedLinear(nn.Module):
    """K Linear layers: [K, B, ..., in] -> [K, B, ..., out]."""

    def __init__(self, members: list[nn.Linear], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        self.in_features = members[0].in_features
        self.out_features = members[0].out_features
        self.weight = stack_parameter(members, "weight", path)
        self.bias = stack_parameter(members, "bias", path)

    def forward(self, x: Tensor) -> Tensor:
        """Member k's x[k] @ weight[k]^T + bias[k], for every k in one batched matmul.

        Computed as weight @ x^T ([K, out, B], returned as its transposed view): the weight's
        gradient then comes out in the weight's own layout (x @ weight^T would give it transposed,
        and accumulating it would cost a strided copy as long as the matmul), and the next stacked
        Linear reads the transposed view as a plain [K, in, B] matrix.
        """
        flat = x if x.ndim == 3 else x.reshape(x.shape[0], -1, x.shape[-1])
        columns = flat.transpose(1, 2)
        if self.bias is None:
            out = torch.bmm(self.weight, columns)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(2), self.weight, columns)
        out = out.transpose(1, 2)
        return out if x.ndim == 3 else out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Members and sizes in `print(net)`."""
        return f"members={self.weight.shape[0]}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class StackedEmbedding(nn.Module):
    """K embedding tables: ids [K, B, ...] -> vectors [K, B, ..., D], member k's from table k."""

    def __init__(self, members: list[nn.Embedding], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        first = members[0]
        if first.max_norm is not None or first.sparse:
            what = "max_norm" if first.max_norm is not None else "sparse=True"
            raise NotStackable(f"{path} ({describe(type(first))}) with {what} has no stacked form")
        self.num_embeddings = first.num_embeddings
        self.padding_idx = first.padding_idx
        self.scale_grad_by_freq = first.scale_grad_by_freq
        self.weight = stack_parameter(members, "weight", path)

    def forward(self, ids: Tensor) -> Tensor:
        """Each member's ids looked up in its own table."""
        members, size = self.weight.shape[:2]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise IndexError(f"index out of range in self: ids must lie in [0, {size})")
        offsets = torch.arange(members, device=ids.device).mul_(size)
        flat_ids = ids + offsets.reshape(members, *([1] * (ids.ndim - 1)))
        table = self.weight.reshape(members * size, -1)
        out = F.embedding(flat_ids, table, scale_grad_by_freq=self.scale_grad_by_freq)
        if self.padding_idx is not None:  # the padding row gets no gradient, as in the member
            out = torch.where((ids == self.padding_idx).unsqueeze(-1), out.detach(), out)
        return out

    def extra_repr(self) -> str:
        """Members and table size in `print(net)`."""
        return f"members={self.weight.shape[0]}, num_embeddings={self.num_embeddings}, embedding_dim={self.weight.shape[-1]}"


class StackedPositionalEncoding(nn.Module):
    """K learned position tables [K, T, D] (or the shared sinusoids) added to [K, B, T, D]."""

    def __init__(self, members: list[PositionalEncoding], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        self.kind = members[0].kind
        if self.kind == "learned":
            self.weight = stack_parameter(members, "weight", path)
        else:  # a function of the position, not saved: every member's is the same
            self.register_buffer("weight", members[0].weight.clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x + the code of each step."""
        steps = x.shape[2]
        if self.kind == "learned":
            return x + self.weight[:, :steps].unsqueeze(1)
        return x + self.weight[:steps]


stacker(nn.Linear)(StackedLinear)
stacker(nn.Embedding)(StackedEmbedding)
stacker(PositionalEncoding)(StackedPositionalEncoding)
