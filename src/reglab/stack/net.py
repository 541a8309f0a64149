"""A stacked net: K member nets of one config computed as one module, member k at index k.

`stack_nets(nets)` turns K nets built by reglab (same spec; other seeds, strengths, rates) into a
`StackedNet`: inputs [K, B, ...] (member k's batch at k) give outputs [K, B, ...], member k's
slice equal to `nets[k](x[k])`, in train and eval mode, with each member's own BatchNorm
statistics and dropout masks. Parameters and buffers keep the member's names and are stored as
[K, *member_shape] (`param[k]` is member k's tensor), so per-member optimization, penalties and
checkpoints index them: `member_state_dict(k)` loads into a plain member net, and
`load_member_state_dict(k, state)` puts a member's state back. Driven by the vectorized launcher
(`hydra/launcher=vectorized`); a net with a layer that has no stacked form raises NotStackable
naming that layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from reglab.stack.blocks import stacked_children
from reglab.stack.layers import NotStackable, describe


class StackedNet(nn.Sequential):
    """The stacked layers of K member nets (an nn.Sequential with the members' layer names)."""

    def __init__(self, layers: Mapping[str, nn.Module], num_members: int) -> None:
        super().__init__(layers)  # type: ignore[arg-type]
        self.num_members = num_members

    def member_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(the member's parameter name, the stacked [K, *member_shape] parameter) for each
        parameter, in the member's `named_parameters()` order."""
        return list(self.named_parameters())

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's state dict, with the member's own keys and shapes (copies, not views)."""
        self._check_member(k)
        return {name: tensor[k].detach().clone() for name, tensor in self.state_dict().items()}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: Mapping[str, Tensor]) -> None:
        """Put a member's state dict (as `member_state_dict` gives, or a member net's own) into
        slot k; the keys must be exactly the member's."""
        self._check_member(k)
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"member state dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for name, tensor in own.items():
            if tuple(state[name].shape) != tuple(tensor.shape[1:]):
                raise ValueError(
                    f"member state dict: {name} has shape {tuple(state[name].shape)}, "
                    f"the member's is {tuple(tensor.shape[1:])}"
                )
            tensor[k].copy_(state[name])

    def _check_member(self, k: int) -> None:
        if not 0 <= k < self.num_members:
            raise IndexError(f"member {k} out of range: the net stacks {self.num_members} members")


def stack_nets(nets: Sequence[nn.Module]) -> StackedNet:
    """One StackedNet computing every net of `nets` (K >= 1 reglab nets of one spec) at once.

    NotStackable, naming the layer, when a layer has no stacked form or the nets differ in more
    than their values (another layer, size or setting).
    """
    nets = list(nets)
    if not nets:
        raise ValueError("stack_nets needs at least one net")
    first = nets[0]
    if not isinstance(first, nn.Sequential):
        raise NotStackable(f"the net ({describe(type(first))}) is not an nn.Sequential")
    stacked = StackedNet(stacked_children(nets, ""), len(nets))
    _check_layout(first, stacked)
    return stacked.train(first.training)


def _check_layout(member: nn.Module, stacked: StackedNet) -> None:
    """Every tensor of the member's state dict, and every parameter, at its own name in the
    stacked net as [K, *member_shape]: the contract with per-member optimization and checkpoints."""
    expected = {name: tuple(t.shape) for name, t in member.state_dict().items()}
    found = {name: tuple(t.shape[1:]) for name, t in stacked.state_dict().items()}
    params = [name for name, _ in member.named_parameters()]
    if found != expected or [name for name, _ in stacked.named_parameters()] != params:
        wrong = sorted(set(expected) ^ set(found)) or [
            name for name in expected if expected[name] != found[name]
        ]
        raise RuntimeError(
            f"the stacked net does not hold the member's tensors as [K, ...]: {wrong}"
        )
