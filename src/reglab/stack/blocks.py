"""Stacked containers: nn.Sequential, reglab's residual blocks (plain and pre-activation) and gated
blocks, child by child.

A container's stacked form holds the stacked forms of its children under the children's names,
so every parameter keeps the member's name (`block_1.linear.weight`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reglab.nn.gated import GatedLinear
from reglab.nn.residual import PreActResidual, Residual
from reglab.stack.layers import NotStackable, stack_modules, stacker


def stacked_children(members: list[nn.Module], path: str) -> OrderedDict[str, nn.Module]:
    """Each child of the members (same names in every member) in its stacked form."""
    names = [name for name, _ in members[0].named_children()]
    for member in members[1:]:
        if [name for name, _ in member.named_children()] != names:
            raise NotStackable(f"{path or 'the net'} has other layers in another member")
    return OrderedDict(
        (
            name,
            stack_modules([m.get_submodule(name) for m in members], f"{path}.{name}".lstrip(".")),
        )
        for name in names
    )


@stacker(nn.Sequential)
def sequential(members: list[nn.Module], path: str) -> nn.Module:
    """The stacked layers, in order."""
    return nn.Sequential(stacked_children(members, path))


@stacker(Residual)
def residual(members: list[nn.Module], path: str) -> nn.Module:
    """A Residual block of the stacked block, shortcut and drop path: shortcut(x) + drop(block(x))."""
    children = stacked_children(members, path)
    stacked = Residual(children["block"])
    stacked.shortcut, stacked.drop_path = children["shortcut"], children["drop_path"]
    return stacked


@stacker(PreActResidual)
def preact_residual(members: list[nn.Module], path: str) -> nn.Module:
    """A pre-activation unit of the stacked pre layers, block, projection (if any) and drop path."""
    children = stacked_children(members, path)
    stacked = PreActResidual(children["pre"], children["block"], children.get("shortcut"))
    stacked.drop_path = children["drop_path"]
    return stacked


class StackedGatedLinear(nn.Module):
    """K gated blocks: the stacked Linear and BatchNorm, then sigmoid(filter) * softplus(core)."""

    def __init__(self, members: list[GatedLinear], path: str) -> None:
        super().__init__()
        children = stacked_children(members, path)
        self.fc_full, self.bn = children["fc_full"], children["bn"]

    def forward(self, x: Tensor) -> Tensor:
        """As the member: BatchNorm over each member's (N*, 2*out) view, then the gate."""
        gated = self.fc_full(x)
        gated = self.bn(gated.reshape(gated.shape[0], -1, gated.shape[-1])).reshape(gated.shape)
        nbr_filter, nbr_core = gated.chunk(2, dim=-1)
        return torch.sigmoid(nbr_filter) * F.softplus(nbr_core)


stacker(GatedLinear)(StackedGatedLinear)
