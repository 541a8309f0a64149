"""Stacked dropout of every kind: each member draws its own masks, at its own rate.

A stacked dropout layer is an instance of the member's class (nn.Dropout, Dropout1d/2d/3d,
AlphaDropout, FeatureAlphaDropout, reglab's DropPath), so dropout schedules, MC dropout and
`reglab.nn.modes` find it as they find the member's. Its `p` is one rate for every member (a
float, as a schedule sets it) or K rates (a tuple, member k's at k: a sweep over dropout rates).

One rate: the member's own forward runs over the K*B samples as one batch, so every sample of
every member gets independent masks of the member's kind (elementwise, per channel, per sample).
K rates: masks are drawn per member with member k's keep probability, over the same dimensions as
the member's kind draws them (`mask_dims`), and scaled (or, for alpha dropout, shifted) as torch
does; a member at rate 0 is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reglab.nn.drop_path import DropPath
from reglab.stack.layers import merged, per_member, stacker

# torch's alpha dropout: -SELU's lower saturation value (scale * alpha).
ALPHA = 1.7580993408473766


class MemberRates:
    """Forward of a stacked dropout layer: `p` a float (all members) or a tuple of K rates."""

    p: float | tuple[float, ...]
    training: bool
    alpha = False
    elementwise = False  # masks per element: the member's forward takes [K, B, ...] as it is

    def mask_dims(self, ndim: int) -> int:
        """How many leading dimensions of a member's input (batch included, `ndim` in all) the
        member's masks vary along: all for elementwise dropout."""
        return ndim

    def forward(self, x: Tensor) -> Tensor:
        """[K, B, ...] with each member's own masks (identity in eval mode)."""
        if not self.training:
            return x
        if not isinstance(self.p, (tuple, list)):
            if self.elementwise:  # any layout will do: no merging (which may copy)
                return super().forward(x)  # type: ignore[misc]
            return merged(x, super().forward)  # type: ignore[misc]
        keep = 1.0 - torch.tensor(self.p, dtype=x.dtype, device=x.device)
        kept = self.mask_dims(x.ndim - 1)
        shape = (*x.shape[: 1 + kept], *([1] * (x.ndim - 1 - kept)))
        keep = per_member(keep, len(shape))
        noise = torch.bernoulli(keep.expand(shape))
        if not self.alpha:
            return x * noise.div_(keep)
        rate = 1.0 - keep
        scale = torch.rsqrt((ALPHA * ALPHA * rate + 1.0) * keep)
        shift = (noise - 1.0) * (ALPHA * scale) + ALPHA * scale * rate
        return x * (noise * scale) + shift


def _channels(ndim: int) -> int:
    return min(2, ndim)


class StackedDropout(MemberRates, nn.Dropout):
    """nn.Dropout with per-member masks and rates."""

    elementwise = True


class StackedAlphaDropout(MemberRates, nn.AlphaDropout):
    """nn.AlphaDropout with per-member masks and rates."""

    alpha = True
    elementwise = True


class StackedFeatureAlphaDropout(MemberRates, nn.FeatureAlphaDropout):
    """nn.FeatureAlphaDropout (whole channels) with per-member masks and rates."""

    alpha = True

    def mask_dims(self, ndim: int) -> int:
        """Per sample and channel."""
        return _channels(ndim)


class StackedDropout1d(MemberRates, nn.Dropout1d):
    """nn.Dropout1d with per-member masks and rates."""

    def mask_dims(self, ndim: int) -> int:
        """Per sample and channel of (N, C, L); a 2-d input is one unbatched (C, L)."""
        return 2 if ndim == 3 else 1


class StackedDropout2d(MemberRates, nn.Dropout2d):
    """nn.Dropout2d with per-member masks and rates."""

    def mask_dims(self, ndim: int) -> int:
        """Per sample and channel (torch reads a 3-d input as (N, C, L))."""
        return _channels(ndim)


class StackedDropout3d(MemberRates, nn.Dropout3d):
    """nn.Dropout3d with per-member masks and rates."""

    def mask_dims(self, ndim: int) -> int:
        """Per sample and channel of (N, C, D, H, W); torch reads any other input as unbatched:
        its first dimension is then the channels."""
        return 2 if ndim == 5 else 1


class StackedDropPath(MemberRates, DropPath):
    """reglab's DropPath (stochastic depth) with per-member masks and rates."""

    def mask_dims(self, ndim: int) -> int:
        """Per sample."""
        return 1


STACKED: dict[type[nn.Module], type[nn.Module]] = {
    nn.Dropout: StackedDropout,
    nn.AlphaDropout: StackedAlphaDropout,
    nn.FeatureAlphaDropout: StackedFeatureAlphaDropout,
    nn.Dropout1d: StackedDropout1d,
    nn.Dropout2d: StackedDropout2d,
    nn.Dropout3d: StackedDropout3d,
    DropPath: StackedDropPath,
}


@stacker(*STACKED)
def stack_dropout(members: list[nn.Module], path: str) -> nn.Module:
    """The stacked form of the members' dropout layer, at each member's own rate."""
    rates = tuple(float(m.p) for m in members)
    module = STACKED[type(members[0])]()
    module.p = rates[0] if all(r == rates[0] for r in rates) else rates
    return module
