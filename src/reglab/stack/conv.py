"""Stacked convolutions: K members as one grouped convolution.

Member k's channels become the k-th group of K*C channels ([K, B, C, ...] -> [B, K*C, ...]) and
the convolution runs with groups = K * the member's groups, over the weight stored as
[K, out, in/groups, *kernel] (transposed: [K, in, out/groups, *kernel]) and viewed as one
[K*out, ...] kernel. Padding modes other than zeros pad explicitly first, as torch does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from reglab.stack.layers import (
    NotStackable,
    channels_merged,
    channels_split,
    describe,
    same_settings,
    stack_parameter,
    stacker,
)

FUNCTIONS: dict[type[nn.Module], Callable[..., Tensor]] = {
    nn.Conv1d: F.conv1d,
    nn.Conv2d: F.conv2d,
    nn.Conv3d: F.conv3d,
    nn.ConvTranspose1d: F.conv_transpose1d,
    nn.ConvTranspose2d: F.conv_transpose2d,
    nn.ConvTranspose3d: F.conv_transpose3d,
}


class StackedConv(nn.Module):
    """K convolutions of one kind (Conv1d/2d/3d, ConvTranspose1d/2d/3d): [K, B, C, ...] ->
    [K, B, C', ...]."""

    def __init__(self, members: list[nn.Module], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        first = members[0]
        self.members = len(members)
        self.function = FUNCTIONS[type(first)]
        self.transposed = first.transposed
        self.stride, self.dilation, self.groups = first.stride, first.dilation, first.groups
        self.output_padding = first.output_padding
        self.padding, self.explicit_padding = first.padding, None
        if first.padding_mode != "zeros":
            if isinstance(first.padding, str):
                raise NotStackable(
                    f"{path} ({describe(type(first))}) with padding={first.padding!r} and "
                    f"padding_mode={first.padding_mode!r} has no stacked form"
                )
            # F.pad's order: last dimension first, each side.
            self.explicit_padding = [p for p in reversed(first.padding) for _ in (0, 1)]
            self.padding = 0
        self.padding_mode = first.padding_mode
        self.weight = stack_parameter(members, "weight", path)
        self.bias = stack_parameter(members, "bias", path)

    def forward(self, x: Tensor) -> Tensor:
        """Each member's convolution, as one grouped convolution over the merged channels."""
        y = channels_merged(x)
        if self.explicit_padding is not None:
            y = F.pad(y, self.explicit_padding, mode=self.padding_mode)
        weight = self.weight.reshape(-1, *self.weight.shape[2:])
        bias = None if self.bias is None else self.bias.reshape(-1)
        groups = self.members * self.groups
        if self.transposed:
            out = self.function(
                y, weight, bias, self.stride, self.padding, self.output_padding, groups,
                self.dilation,
            )  # fmt: skip
        else:
            out = self.function(y, weight, bias, self.stride, self.padding, self.dilation, groups)
        return channels_split(out, self.members)

    def extra_repr(self) -> str:
        """Members and kernel in `print(net)`."""
        return (
            f"members={self.members}, weight={tuple(self.weight.shape[1:])}, stride={self.stride}"
        )


stacker(*FUNCTIONS)(StackedConv)
