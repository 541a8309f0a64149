"""Per-member weight penalties of a stacked model: the `regularization` group, member by member.

A vectorized study's members may differ in the penalty's strength and in the kind's own options
(ElasticNet's `l1_ratio`); everything else of the `regularization` node is shared. Each member's
penalty is its own `reglab.callbacks.WeightPenalty`, built from its run's node as a sequential run
builds it; `MemberPenalty` applies those to the stacked parameters [K, ...] with the same maths:
- which parameters: each member's selection by reglab's `select_parameters` on the *member's*
  names and shapes (a stacked bias is 2-D, yet a bias), with its include / exclude / strengths;
- the gradient method: the kind's `add_gradient` with a strength [K] (before clipping, from the
  stacked module's `on_before_optimizer_step`);
- the proximal method: the kind's `proximal_step` after each optimizer step with member k's own
  threshold, strength_k times member k's effective step (`effective_step` of its own lr and the
  shared momentum settings), and with Adam per coordinate from member k's slice of the second
  moments (`adam_scale`), as `WeightPenalty.after_optimizer_step` computes one run's. Inactive
  members are left bitwise as they are.
Options that differ between members reach the kind as tensors [K] (see
`reglab.regularization.penalties.member_view`); a kind that cannot take them cannot be stacked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from reglab import checks
from reglab.callbacks.weight_penalty import (
    WeightPenalty,
    adam_scale,
    effective_step,
    weight_statistics,
)
from reglab.regularization.penalties import PENALTIES, Penalty, member_view
from reglab.stack.optim import MemberOptimizer

# WeightPenalty settings every member must share (strength and the kind's options may differ).
SHARED = (
    "kind",
    "method",
    "include",
    "exclude",
    "strengths",
    "warmup_epochs",
    "proximal_threshold",
)


class _MemberShapes:
    """A member's parameters by name, as stand-ins of its own shapes (for `select_parameters`)."""

    def __init__(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        self.shapes = [
            (name, torch.empty(p.shape[1:], device="meta").requires_grad_(p.requires_grad))
            for name, p in named
        ]

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.shapes)


class MemberPenalty:
    """The weight penalties `members` (member k's `WeightPenalty`) on stacked parameters `named`.

    `named` holds (member parameter name, stacked tensor [K, ...]) pairs. `groups` pairs each
    set of parameters sharing their per-member strengths with those strengths (float64 [K]).
    """

    def __init__(
        self, named: Sequence[tuple[str, torch.Tensor]], members: Sequence[WeightPenalty]
    ) -> None:
        self.members = list(members)
        count = named[0][1].shape[0]
        if len(self.members) != count:
            raise ValueError(f"{len(self.members)} penalties for {count} stacked members")
        first = self.members[0]
        for key in SHARED:
            for member in self.members[1:]:
                if getattr(member, key) != getattr(first, key):
                    raise ValueError(f"regularization.{key} differs between members")
        self.method, self.proximal_threshold = first.method, first.proximal_threshold
        stacked = dict(named)
        shapes = _MemberShapes(named)
        per_name: dict[str, list[float]] = {}
        for k, member in enumerate(self.members):
            for group in member.parameter_groups(shapes):  # type: ignore[arg-type]
                for name in group.names:
                    per_name.setdefault(name, [0.0] * count)[k] = group.strength
        by_strengths: dict[tuple[float, ...], list[torch.Tensor]] = {}
        for name, strengths in per_name.items():
            by_strengths.setdefault(tuple(strengths), []).append(stacked[name])
        self.groups = [
            (torch.tensor(strengths, dtype=torch.float64), params)
            for strengths, params in by_strengths.items()
        ]
        like = named[0][1]
        self.penalty = _stacked_penalty(first.kind, [m.penalty for m in self.members], like)
        self._scale = 1.0

    def set_epoch(self, epoch: int) -> None:
        """The warm-up factor of `epoch` (shared by the members), as WeightPenalty's epoch start."""
        self._scale = self.members[0].scale(epoch)

    def _strengths(self, strengths: torch.Tensor) -> torch.Tensor:
        return strengths * self._scale if self._scale != 1.0 else strengths

    @torch.no_grad()
    def add_gradient(self) -> None:
        """grads += strength_k * dR/dw per member (the smooth part only with `method: proximal`)."""
        smooth_only = self.method == "proximal"
        for strengths, params in self.groups:
            strength = self._strengths(strengths)
            if not bool((strength > 0).any()):
                continue
            pairs = [(p, p.grad) for p in params if p.grad is not None]
            if pairs:
                stepped, grads = map(list, zip(*pairs, strict=True))
                member = strength.to(grads[0].device, grads[0].dtype)
                self.penalty.add_gradient(stepped, grads, member, smooth_only)

    @torch.no_grad()
    def proximal_step(self, optimizer: MemberOptimizer) -> None:
        """The proximal step of the non-smooth part, after `optimizer`'s step, per member.

        Member k's threshold is strength_k times its effective step (per coordinate with Adam's
        adaptive threshold); members `optimizer.active` marks inactive stay as they are.
        """
        if self.method != "proximal":
            return
        settings = optimizer.param_groups[0]
        steps = torch.tensor(
            [effective_step(member) for member in optimizer.member_settings()], dtype=torch.float64
        )
        active = optimizer.active
        adaptive = self.proximal_threshold == "adaptive"
        for strengths, params in self.groups:
            strength = self._strengths(strengths)
            if not bool((strength > 0).any()):
                continue
            per_member = steps * strength
            thresholds = []
            for param in params:
                factor = member_view(per_member.to(param.device, param.dtype), param)
                scale = adam_scale(optimizer, param, settings) if adaptive else None
                thresholds.append(factor if scale is None else scale.mul_(factor))
            before = None if bool(active.all()) else [p.clone() for p in params]
            self.penalty.proximal_step(params, thresholds)
            if before is not None:
                for param, kept in zip(params, before, strict=True):
                    keep = member_view(active.to(param.device), param)
                    param.copy_(torch.where(keep, param, kept))

    @torch.no_grad()
    def values(self) -> torch.Tensor:
        """Each member's penalty (float64 [K]): sum over groups of strength * warm-up * R(w_k)."""
        totals = torch.zeros(len(self.members), dtype=torch.float64)
        for strengths, params in self.groups:
            strength = self._strengths(strengths)
            for k, member in enumerate(self.members):
                own = member.penalty.value([p[k] for p in params]).double().cpu()
                totals[k] += strength[k] * own
        return totals

    @torch.no_grad()
    def statistics(self, k: int) -> dict[str, float]:
        """Member k's `reg/` strength, penalty, norms and zero fractions, as its own
        WeightPenalty logs them at an epoch's end (without the data loss and objective)."""
        params = [p.detach()[k] for _, group in self.groups for p in group]
        return {
            "reg/strength": self.members[k].strength * self._scale,
            "reg/penalty": self.values()[k].item(),
            **weight_statistics(params),
        }


def _stacked_penalty(kind: str, penalties: list[Penalty], like: torch.Tensor) -> Penalty:
    """One penalty of `kind` whose options are the members' (a tensor [K] where they differ,
    of `like`'s device and dtype)."""
    factory = PENALTIES.get(kind, "kind")
    options = {}
    for name in checks.signature_names(factory):
        values = [getattr(penalty, name) for penalty in penalties]
        same = all(value == values[0] for value in values)
        options[name] = (
            values[0] if same else torch.tensor(values, device=like.device, dtype=like.dtype)
        )
    return factory(**options)
