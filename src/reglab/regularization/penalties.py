"""Penalty maths on bare tensors, apart from any callback (so it is testable on its own).

Every penalty is an ElasticNet  R(w) = r * sum|w| + (1 - r) * sum w^2  (no 1/2), scaled by a
strength lambda: L1 is r = 1, L2 is r = 0. The gradient, the value and the proximal step use
`torch._foreach_*` kernels over the whole parameter list, not a Python loop of small ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reglab.errors import ConfigError

KINDS = ("l1", "l2", "elastic_net")


@dataclass(frozen=True)
class ElasticNet:
    """R(w) = l1_ratio * sum|w| + (1 - l1_ratio) * sum w^2."""

    l1_ratio: float

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
        with_l1: bool = True,
    ) -> None:
        """grads += strength * dR/dw: r * sign(w) (subgradient 0 at 0) + 2 (1 - r) w.

        `with_l1=False` adds only the L2 part (the L1 part is then applied proximally).
        """
        if self.l1_ratio > 0 and with_l1:
            torch._foreach_add_(grads, torch._foreach_sign(params), alpha=strength * self.l1_ratio)
        if self.l1_ratio < 1:
            torch._foreach_add_(grads, params, alpha=2.0 * strength * (1 - self.l1_ratio))

    @torch.no_grad()
    def proximal_step(
        self, params: list[torch.Tensor], threshold: float | list[torch.Tensor]
    ) -> None:
        """Soft-threshold the L1 part: w <- sign(w) * max(|w| - threshold * r, 0), in place.

        `threshold` is one number for every weight, or one tensor per parameter holding a
        threshold per coordinate (the adaptive proximal step of an Adam-type optimizer).
        """
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


def make_penalty(kind: str, l1_ratio: float | None = None) -> ElasticNet:
    """The penalty for `regularization.kind`; `l1_ratio` only for elastic_net."""
    if kind == "l1":
        return ElasticNet(1.0)
    if kind == "l2":
        return ElasticNet(0.0)
    if kind == "elastic_net":
        if l1_ratio is None or not 0.0 <= float(l1_ratio) <= 1.0:
            raise ConfigError("regularization.l1_ratio", f"must be in [0, 1], got {l1_ratio!r}")
        return ElasticNet(float(l1_ratio))
    raise ConfigError("regularization.kind", f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
