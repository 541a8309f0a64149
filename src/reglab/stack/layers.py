"""The stacker registry: K member layers of one type -> one module that computes all K at once.

A vectorized study trains K member nets of one config (other seeds, strengths, rates, lrs) as one
stacked net. Each layer type has a *stacker*: a function taking the K member modules (same type,
same shapes) and the layer's path in the net, and returning one module whose forward maps inputs
with a leading member dimension, [K, B, ...], to outputs [K, B, ...], member k's slice equal to
member k's own forward. Its parameters and buffers keep the member's names, stored as
[K, *member_shape] tensors (`stacked[k]` is member k's tensor), so that a member's state dict is
one index away. Nothing here changes training; the launcher of vectorized studies
(`hydra/launcher=vectorized`) decides which runs are stacked.

A stacker is registered for exact types (a subclass may change `forward`): one
`@stacker(MyLayer)` next to its definition. A layer without one raises `NotStackable`, whose
message names the layer: the launcher then runs the members one by one and prints that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from reglab.registry import Registry

# stacker(members, path) -> the stacked module; `path` names the layer in messages.
Stacker = Callable[[list[nn.Module], str], nn.Module]

STACKERS: Registry[Stacker] = Registry("stacked layer")


class NotStackable(Exception):
    """A layer of the net has no stacked form, or its members differ in more than their values;
    the message names the layer (the launcher prints it as the reason to run members one by one)."""


def type_key(cls: type) -> str:
    """The registry key of a module type: its full dotted name (reglab's LSTM is not nn.LSTM)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(cls: type) -> str:
    """`nn.LSTM` for torch's layers, the full dotted name for others."""
    if cls.__module__.startswith("torch.nn."):
        return f"nn.{cls.__qualname__}"
    return type_key(cls)


def stacker(*classes: type[nn.Module]) -> Callable[[Stacker], Stacker]:
    """Register the decorated function as the stacker of each of `classes` (exact types)."""

    def decorate(function: Stacker) -> Stacker:
        for cls in classes:
            STACKERS.register(type_key(cls), function)
        return function

    return decorate


def stack_modules(members: Sequence[nn.Module], path: str = "") -> nn.Module:
    """The stacked form of `members` (one module per member, same type), by the stacker of their
    type; NotStackable naming the layer at `path` when there is none or the members differ."""
    members = list(members)
    cls = type(members[0])
    where = path or "the net"
    others = sorted({describe(type(m)) for m in members if type(m) is not cls})
    if others:
        raise NotStackable(f"{where} is a {describe(cls)} in one member, {others[0]} in another")
    found = STACKERS.find(type_key(cls))
    if found is None:
        raise NotStackable(f"{where} ({describe(cls)}) has no stacked form")
    return found(members, path)


def same_settings(members: Sequence[nn.Module], path: str) -> None:
    """NotStackable unless every member shows the same settings (`extra_repr`: sizes, strides,
    eps, ...): members may differ in their values only."""
    shown = [m.extra_repr() for m in members]
    different = next((s for s in shown if s != shown[0]), None)
    if different is not None:
        raise NotStackable(
            f"{path or 'the net'} ({describe(type(members[0]))}) differs across members: "
            f"({shown[0]}) vs ({different})"
        )


def stack_tensors(members: Sequence[nn.Module], name: str, path: str) -> torch.Tensor | None:
    """The members' tensors `name` (a parameter or buffer) stacked to [K, *shape], detached;
    None where the members have none (a layer without bias)."""
    tensors = [getattr(m, name) for m in members]
    if all(t is None for t in tensors):
        return None
    shapes = {tuple(t.shape) if t is not None else None for t in tensors}
    if len(shapes) > 1:
        raise NotStackable(
            f"{path}.{name} has different shapes across members: {sorted(map(str, shapes))}"
        )
    return torch.stack([t.detach() for t in tensors]).clone()


def stack_parameter(members: Sequence[nn.Module], name: str, path: str) -> nn.Parameter | None:
    """The members' parameter `name` as one [K, *shape] parameter (None where there is none)."""
    stacked = stack_tensors(members, name, path)
    if stacked is None:
        return None
    return nn.Parameter(stacked, requires_grad=getattr(members[0], name).requires_grad)


def per_member(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """[K, *rest] values viewed to broadcast against a [K, B, ...] tensor of `ndim` dimensions,
    aligned to its last dimensions: [K, 1, ..., 1, *rest]."""
    return values.reshape(values.shape[0], *([1] * (ndim - values.ndim)), *values.shape[1:])


def merged(x: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`function` (a per-sample computation) on the K*B samples of [K, B, ...] `x` as one batch.

    Samples are merged in whichever order is a view of `x` (a transposed [B, K, ...] layout,
    as the grouped convolutions leave it, merges as B*K), so no copy is made where none is needed.
    """
    members, batch = x.shape[:2]
    swapped = x.transpose(0, 1)
    if not x.is_contiguous() and swapped.is_contiguous():
        out = function(swapped.reshape(batch * members, *x.shape[2:]))
        return out.reshape(batch, members, *out.shape[1:]).transpose(0, 1)
    out = function(x.reshape(members * batch, *x.shape[2:]))
    return out.reshape(members, batch, *out.shape[1:])


def channels_merged(x: torch.Tensor) -> torch.Tensor:
    """[K, B, C, ...] -> [B, K*C, ...]: member k's channels are the k-th group (a view when `x` is
    a transposed [B, K, C, ...] layout, else one copy)."""
    members, batch = x.shape[:2]
    return x.transpose(0, 1).reshape(batch, members * x.shape[2], *x.shape[3:])


def channels_split(y: torch.Tensor, members: int) -> torch.Tensor:
    """[B, K*C, ...] -> [K, B, C, ...] (a view)."""
    batch, channels = y.shape[:2]
    return y.reshape(batch, members, channels // members, *y.shape[2:]).transpose(0, 1)
