"""Penalty maths on bare tensors, apart from any callback (so it is testable on its own).

A penalty kind is a class that follows the `Penalty` protocol, registered in `PENALTIES` under the
name `regularization.kind` selects (`@PENALTIES.register("group_lasso")`); the weight-penalty
callback knows no kind by name. The built-in kinds are ElasticNets
R(w) = r * sum|w| + (1 - r) * sum w^2  (no 1/2), scaled by a strength lambda: L1 is r = 1, L2 is
r = 0. Their gradient, value and proximal step use `torch._foreach_*` kernels over the whole
parameter list, not a Python loop of small ops.

Members of a stacked model (a vectorized study, `reglab.stack`) hold each parameter as one tensor
[K, *member_shape]. The same maths serves them: a strength, a threshold or ElasticNet's
`l1_ratio` may be a tensor [K], one value per member, which `member_view` broadcasts over each
parameter's [K, ...]; member k's slice then gets exactly what member k's own run would get.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from reglab import checks
from reglab.errors import ConfigError
from reglab.registry import Registry

#: A per-coordinate threshold: one number for every weight, or one tensor per parameter (one
#: value per coordinate, or per member as [K, 1, ...]: it broadcasts over the parameter).
Threshold = float | list[torch.Tensor]
#: A strength: one number, or a tensor [K] with one per member of stacked parameters [K, ...].
Strength = float | torch.Tensor


def member_view(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A per-member tensor [K] as [K, 1, ..., 1], to broadcast over `like` ([K, ...]); a number as is."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.reshape(-1, *(1,) * (like.ndim - 1))


def _some(condition: bool | torch.Tensor) -> bool:
    """Whether `condition` holds for some member (a number's condition is one bool)."""
    return bool(condition.any()) if isinstance(condition, torch.Tensor) else bool(condition)


def _add_times(grads: list[torch.Tensor], tensors: list[torch.Tensor], factor: Strength) -> None:
    """grads += factor * tensors in place; a per-member factor [K] broadcast by `member_view`."""
    if isinstance(factor, torch.Tensor):
        torch._foreach_addcmul_(grads, tensors, [member_view(factor, t) for t in tensors])
    else:
        torch._foreach_add_(grads, tensors, alpha=factor)


@runtime_checkable
class Penalty(Protocol):
    """A weight penalty R(w): what the weight-penalty callback needs of a kind.

    `has_l1_part` says whether R has a non-smooth part that `proximal_step` applies; only such a
    kind can run with `method: proximal`, and then `add_gradient(..., smooth_only=True)` adds the
    rest.
    """

    has_l1_part: bool

    def value(self, params: list[torch.Tensor]) -> torch.Tensor:
        """R summed over `params` (a 0-dim tensor, differentiable)."""
        ...

    def add_gradient(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        strength: Strength,
        smooth_only: bool = False,
    ) -> None:
        """grads += strength * dR/dw in place; only the smooth part's gradient with `smooth_only`.

        A kind that takes stacked members accepts a strength [K] (see `member_view`).
        """
        ...

    def proximal_step(self, params: list[torch.Tensor], threshold: Threshold) -> None:
        """w <- prox of threshold * (the non-smooth part of R) at w, in place.

        `threshold` is one number for every weight, or one tensor per parameter holding a
        threshold per coordinate (the adaptive proximal step of an Adam-type optimizer).
        """
        ...


#: Penalty kinds by name: each entry builds a Penalty from the kind's own options.
PENALTIES: Registry[Callable[..., Penalty]] = Registry("penalty kind")


@PENALTIES.register("elastic_net")
@dataclass(frozen=True)
class ElasticNet:
    """R(w) = l1_ratio * sum|w| + (1 - l1_ratio) * sum w^2.

    `l1_ratio` is one number, or a tensor [K] of one per member of stacked parameters [K, ...]
    (for the gradient and the proximal step; a member's value is its own ElasticNet's).
    """

    l1_ratio: float | torch.Tensor

    def __post_init__(self) -> None:
        ratio = self.l1_ratio
        if isinstance(ratio, torch.Tensor):
            for value in ratio.tolist():
                checks.probability("l1_ratio", value)
        else:
            object.__setattr__(self, "l1_ratio", checks.probability("l1_ratio", ratio))
        # Which parts some member has, settled once (no device sync per step).
        object.__setattr__(self, "_parts", (_some(ratio > 0), _some(ratio < 1)))

    @property
    def has_l1_part(self) -> bool:
        """Whether the L1 part is there (the proximal method applies it)."""
        return self._parts[0]

    def value(self, params: list[torch.Tensor]) -> torch.Tensor:
        """R summed over `params` (a 0-dim tensor)."""
        if isinstance(self.l1_ratio, torch.Tensor):
            raise TypeError("a per-member ElasticNet has no one value: take each member's own")
        total = params[0].new_zeros(())
        if self.l1_ratio > 0:
            total = total + self.l1_ratio * torch.stack(torch._foreach_norm(params, 1)).sum()
        if self.l1_ratio < 1:
            squares = torch.stack(torch._foreach_norm(params, 2)).pow(2).sum()
            total = total + (1 - self.l1_ratio) * squares
        return total

    @torch.no_grad()
    def add_gradient(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        strength: Strength,
        smooth_only: bool = False,
    ) -> None:
        """grads += strength * dR/dw: r * sign(w) (subgradient 0 at 0) + 2 (1 - r) w.

        `smooth_only` adds only the L2 part (the L1 part is then applied proximally). A strength
        or l1_ratio [K] gives each member of stacked parameters its own.
        """
        has_l1, has_l2 = self._parts
        if has_l1 and not smooth_only:
            _add_times(grads, torch._foreach_sign(params), strength * self.l1_ratio)
        if has_l2:
            _add_times(grads, params, 2.0 * strength * (1 - self.l1_ratio))

    @torch.no_grad()
    def proximal_step(self, params: list[torch.Tensor], threshold: Threshold) -> None:
        """Soft-threshold the L1 part: w <- sign(w) * max(|w| - threshold * r, 0), in place.

        With an l1_ratio [K], each member of stacked parameters [K, ...] shrinks by its own r.
        """
        ratio = self.l1_ratio
        shrink: float | list[torch.Tensor]
        if isinstance(ratio, torch.Tensor):
            ratios = [member_view(ratio, p) for p in params]
            if isinstance(threshold, float | int):
                shrink = torch._foreach_mul(ratios, threshold)
            else:
                shrink = torch._foreach_mul(threshold, ratios)
        elif isinstance(threshold, float | int):
            if threshold * ratio <= 0:
                return
            shrink = threshold * ratio
        else:
            shrink = torch._foreach_mul(threshold, ratio)
        magnitudes = torch._foreach_abs(params)
        torch._foreach_sub_(magnitudes, shrink)
        torch._foreach_clamp_min_(magnitudes, 0.0)
        torch._foreach_mul_(magnitudes, torch._foreach_sign(params))
        torch._foreach_copy_(params, magnitudes)


@PENALTIES.register("l1")
class L1(ElasticNet):
    """Lasso, R(w) = sum|w|: the ElasticNet with l1_ratio 1."""

    def __init__(self) -> None:
        super().__init__(1.0)


@PENALTIES.register("l2")
class L2(ElasticNet):
    """Ridge, R(w) = sum w^2 (no 1/2): the ElasticNet with l1_ratio 0."""

    def __init__(self) -> None:
        super().__init__(0.0)


def make_penalty(kind: str, options: dict[str, Any] | None = None) -> Penalty:
    """The penalty of kind `kind`, built from those of `options` its constructor takes.

    Options set to None and options the kind does not take are ignored on purpose: every
    `regularization` option carries every knob so that sweeps over kinds compose. The kind's
    constructor checks its own values; an argument it requires but `options` lacks is an error.
    """
    factory = PENALTIES.get(kind, "kind")
    taken = checks.signature_names(factory)
    given = {k: v for k, v in (options or {}).items() if v is not None and k in taken}
    for name in _required_names(factory):
        if name not in given:
            raise ConfigError(name, f"required by penalty kind {kind!r}, got null")
    return factory(**given)


def _required_names(factory: Callable[..., Any]) -> list[str]:
    """Arguments of `factory` (a class's constructor) without a default."""
    target = factory.__init__ if isinstance(factory, type) else factory
    return [
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.name != "self"
        and p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
