"""Penalty maths on bare tensors, apart from any callback (so it is testable on its own).

A penalty kind is a class that follows the `Penalty` protocol, registered in `PENALTIES` under the
name `regularization.kind` selects (`@PENALTIES.register("group_lasso")`); the weight-penalty
callback knows no kind by name. The built-in kinds are ElasticNets
R(w) = r * sum|w| + (1 - r) * sum w^2  (no 1/2), scaled by a strength lambda: L1 is r = 1, L2 is
r = 0. Their gradient, value and proximal step use `torch._foreach_*` kernels over the whole
parameter list, not a Python loop of small ops.
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

#: A per-coordinate threshold: one number for every weight, or one tensor per parameter.
Threshold = float | list[torch.Tensor]


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
        strength: float,
        smooth_only: bool = False,
    ) -> None:
        """grads += strength * dR/dw in place; only the smooth part's gradient with `smooth_only`."""
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
    """R(w) = l1_ratio * sum|w| + (1 - l1_ratio) * sum w^2."""

    l1_ratio: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "l1_ratio", checks.probability("l1_ratio", self.l1_ratio))

    @property
    def has_l1_part(self) -> bool:
        """Whether the L1 part is there (the proximal method applies it)."""
        return self.l1_ratio > 0

    def value(self, params: list[torch.Tensor]) -> torch.Tensor:
        """R summed over `params` (a 0-dim tensor)."""
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
        strength: float,
        smooth_only: bool = False,
    ) -> None:
        """grads += strength * dR/dw: r * sign(w) (subgradient 0 at 0) + 2 (1 - r) w.

        `smooth_only` adds only the L2 part (the L1 part is then applied proximally).
        """
        if self.l1_ratio > 0 and not smooth_only:
            torch._foreach_add_(grads, torch._foreach_sign(params), alpha=strength * self.l1_ratio)
        if self.l1_ratio < 1:
            torch._foreach_add_(grads, params, alpha=2.0 * strength * (1 - self.l1_ratio))

    @torch.no_grad()
    def proximal_step(self, params: list[torch.Tensor], threshold: Threshold) -> None:
        """Soft-threshold the L1 part: w <- sign(w) * max(|w| - threshold * r, 0), in place."""
        if isinstance(threshold, float | int):
            if threshold * self.l1_ratio <= 0:
                return
            shrink: float | list[torch.Tensor] = threshold * self.l1_ratio
        else:
            shrink = torch._foreach_mul(threshold, self.l1_ratio)
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
