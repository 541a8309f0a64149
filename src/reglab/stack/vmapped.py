"""Stacked forms by `torch.func.vmap`: a layer with no batched-kernel form, computed member by
member inside one module (torch.func maps its forward over the stacked parameters).

Used for reglab's Transformer encoder: torch has batching rules for most of what it calls and
falls back to a loop over the members for the rest (scaled dot-product attention, the fused
encoder layer in eval mode), so the result is exact but the speed is about that of K members
in a loop. LSTM and GRU have no batching rule at all (`aten::lstm`, `aten::gru`): torch.func
cannot map them, so they have a stacked form of their own (reglab.stack.recurrent). Dropout
inside draws each member's own masks (`randomness="different"`), at one rate for all members:
members with other rates are NotStackable.
"""

from __future__ import annotations

import copy
import warnings

from torch import Tensor, nn
from torch.func import functional_call, vmap

from reglab.nn.modes import dropout_rates
from reglab.nn.sequence import TransformerEncoder
from reglab.stack.layers import (
    NotStackable,
    describe,
    same_settings,
    stack_parameter,
    stack_tensors,
    stacker,
)


class Vmapped(nn.Module):
    """The members' layer with [K, *shape] parameters under the member's names, its forward
    mapped over the members.

    The children of a copy of the member's layer are this module's children (so names are the
    member's); the copy itself is kept aside as the function `functional_call` runs.
    """

    def __init__(self, members: list[nn.Module], path: str) -> None:
        super().__init__()
        rates = [dropout_rates(m) for m in members]
        if any(r != rates[0] for r in rates):
            raise NotStackable(
                f"{path} ({describe(type(members[0]))}) has other dropout rates in another member: "
                "its stacked form (torch.func.vmap) takes one rate for all"
            )
        for name, _ in members[0].named_modules():
            same_settings([m.get_submodule(name) for m in members], f"{path}.{name}".rstrip("."))
        template = copy.deepcopy(members[0])
        for name, _ in members[0].named_parameters():
            owner, _, leaf = name.rpartition(".")
            module = template.get_submodule(owner)
            setattr(
                module, leaf, stack_parameter([m.get_submodule(owner) for m in members], leaf, name)
            )
        saved = members[0].state_dict()
        for name, _ in members[0].named_buffers():
            owner, _, leaf = name.rpartition(".")
            template.get_submodule(owner).register_buffer(
                leaf,
                stack_tensors([m.get_submodule(owner) for m in members], leaf, name),
                persistent=name in saved,
            )
        for name, child in template.named_children():
            self.add_module(name, child)
        for name, param in template.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in template.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        object.__setattr__(self, "template", template)  # not a child: its tensors are ours

    def train(self, mode: bool = True) -> Vmapped:
        """Set the mode here, in the children and in the kept-aside copy."""
        super().train(mode)
        self.template.training = mode
        return self

    def forward(self, x: Tensor) -> Tensor:
        """[K, B, ...] -> [K, B, ...]: member k's layer with member k's tensors on x[k]."""

        def member(params: dict, buffers: dict, inputs: Tensor) -> Tensor:
            return functional_call(self.template, (params, buffers), (inputs,))

        params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
        with warnings.catch_warnings():
            # "There is a performance drop because we have not yet implemented the batching rule"
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            return vmap(member, randomness="different")(params, buffers, x)


stacker(TransformerEncoder)(Vmapped)
