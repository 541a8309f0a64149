"""Stacked normalization layers: per-member affine parameters and running statistics.

BatchNorm and InstanceNorm (1d/2d/3d) and GroupNorm see member k's channels as the k-th group of
K*C channels ([B, K*C, ...]): statistics are per member and channel exactly as in the member, and
the running statistics, stored as [K, C] buffers (`num_batches_tracked` as [K]), are updated in
place through their [K*C] views. LayerNorm normalizes each sample as the member does and applies
member k's [K, *normalized_shape] affine parameters to its slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reglab.stack.layers import (
    channels_merged,
    channels_split,
    per_member,
    same_settings,
    stack_parameter,
    stack_tensors,
    stacker,
)

BATCH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
INSTANCE = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _flat(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.view(-1)


class StackedBatchNorm(nn.Module):
    """K BatchNorm (or InstanceNorm) layers, each with its own running statistics."""

    def __init__(self, members: list[nn.Module], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        first = members[0]
        self.members = len(members)
        self.instance = isinstance(first, INSTANCE)
        self.eps, self.momentum = first.eps, first.momentum
        self.track_running_stats = first.track_running_stats
        self.weight = stack_parameter(members, "weight", path)
        self.bias = stack_parameter(members, "bias", path)
        for name in STATISTICS:
            self.register_buffer(name, stack_tensors(members, name, path))

    def forward(self, x: Tensor) -> Tensor:
        """[K, B, C, ...] normalized per member and channel (running statistics as the member's)."""
        y = channels_merged(x)
        if self.instance:
            out = F.instance_norm(
                y, _flat(self.running_mean), _flat(self.running_var), _flat(self.weight),
                _flat(self.bias), self.training or not self.track_running_stats,
                self.momentum if self.momentum is not None else 0.0, self.eps,
            )  # fmt: skip
            return channels_split(out, self.members)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average: the same count for every member
                counts = self.num_batches_tracked
                if bool((counts != counts[0]).any()):
                    raise RuntimeError(
                        "BatchNorm with momentum=None needs one batch count for all members"
                    )
                factor = 1.0 / float(counts[0])
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        out = F.batch_norm(
            y,
            _flat(self.running_mean) if keep_stats else None,
            _flat(self.running_var) if keep_stats else None,
            _flat(self.weight),
            _flat(self.bias),
            use_batch,
            factor,
            self.eps,
        )
        return channels_split(out, self.members)


class StackedGroupNorm(nn.Module):
    """K GroupNorm layers: K * groups groups over the merged channels."""

    def __init__(self, members: list[nn.GroupNorm], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        self.members, self.num_groups, self.eps = (
            len(members),
            members[0].num_groups,
            members[0].eps,
        )
        self.weight = stack_parameter(members, "weight", path)
        self.bias = stack_parameter(members, "bias", path)

    def forward(self, x: Tensor) -> Tensor:
        """Each member's group normalization."""
        y = channels_merged(x)
        groups = self.members * self.num_groups
        out = F.group_norm(y, groups, _flat(self.weight), _flat(self.bias), self.eps)
        return channels_split(out, self.members)


class StackedLayerNorm(nn.Module):
    """K LayerNorm layers: the member's normalization, then member k's weight and bias."""

    def __init__(self, members: list[nn.LayerNorm], path: str) -> None:
        super().__init__()
        same_settings(members, path)
        self.normalized_shape, self.eps = tuple(members[0].normalized_shape), members[0].eps
        self.weight = stack_parameter(members, "weight", path)
        self.bias = stack_parameter(members, "bias", path)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize each sample over the member's normalized shape, then member k's affine map."""
        out = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        if self.weight is not None and self.bias is not None:
            return torch.addcmul(
                per_member(self.bias, x.ndim), out, per_member(self.weight, x.ndim)
            )
        if self.weight is not None:
            out = out * per_member(self.weight, x.ndim)
        if self.bias is not None:
            out = out + per_member(self.bias, x.ndim)
        return out


stacker(*BATCH, *INSTANCE)(StackedBatchNorm)
stacker(nn.GroupNorm)(StackedGroupNorm)
stacker(nn.LayerNorm)(StackedLayerNorm)
