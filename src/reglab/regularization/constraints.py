"""Weight constraints on bare tensors, apart from any callback (so they are testable on their own).

A constraint is a projection applied to weights after every optimizer step (Keras's
`kernel_constraint`). A constraint kind is a class that follows the `Constraint` protocol,
registered in `CONSTRAINTS` under the name `constraint.kind` selects
(`@CONSTRAINTS.register("max_norm")`); the weight-constraint callback knows no kind by name.

The built-in kind is the max-norm constraint (Srivastava et al. 2014, section 5.1; Keras
`MaxNorm`): each unit's incoming weight vector w is projected onto the ball ||w||_2 <= c. With
Keras's formula, w <- w * clip(||w||, 0, c) / (eps + ||w||), eps = 1e-7 (Keras's
`backend.epsilon()`; `torch.renorm` uses the same). Here a unit inside the ball is left exactly as
it is, where Keras multiplies it by ||w|| / (eps + ||w||), a change of eps / ||w|| (1e-7 for
a unit of norm 1): units outside get Keras's w * c / (eps + ||w||), units inside stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from reglab import checks
from reglab.errors import ConfigError
from reglab.registry import Registry

#: Keras's `backend.epsilon()`, and the one `torch.renorm` adds to the norm.
EPSILON = 1e-7


@runtime_checkable
class Constraint(Protocol):
    """A projection of weights: what the weight-constraint callback needs of a kind.

    A weight tensor holds units (a Linear layer's output features, a convolution's output
    channels) along its `unit_dim`; `reduce_dims` says which dims one unit's weights span for
    the kind, `project` moves the weights in place and counts the units it moved.
    """

    def reduce_dims(self, shape: Sequence[int], unit_dim: int) -> tuple[int, ...]:
        """The dims of a tensor of `shape` that one unit's weights span; a ConfigError naming
        the kind's own argument if its settings do not fit that shape."""
        ...

    def project(self, param: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Project `param` in place, its units' weights spanning `dims`; return how many units
        it moved, a 0-dim tensor on `param`'s device (so that no step waits for the GPU)."""
        ...


#: Constraint kinds by name: each entry builds a Constraint from the kind's own options.
CONSTRAINTS: Registry[Callable[..., Constraint]] = Registry("constraint kind")


@CONSTRAINTS.register("max_norm")
@dataclass(frozen=True)
class MaxNorm:
    """Each unit's weights onto the L2 ball of radius `max_value` (the module docstring's formula).

    `axis` is Keras's: the dims the norm is taken over, in torch's layout (a Linear weight is
    [out, in], so Keras's Dense `axis=0` is `axis=1` here; a Conv2d weight is [out, in, kh, kw]:
    `axis=[1, 2, 3]`). None (the default) takes every dim but the tensor's unit dim, which is
    right for any Linear or convolution, transposed ones included.
    """

    max_value: float = 3.0
    axis: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "max_value", checks.number("max_value", self.max_value, 0.0, low_open=True)
        )
        object.__setattr__(self, "axis", _axis(self.axis))

    def reduce_dims(self, shape: Sequence[int], unit_dim: int) -> tuple[int, ...]:
        """`axis` made non-negative for `shape`, or every dim but `unit_dim`."""
        ndim = len(shape)
        if self.axis is None:
            return tuple(d for d in range(ndim) if d != unit_dim)
        for dim in self.axis:
            if not -ndim <= dim < ndim:
                raise ConfigError(
                    "axis", f"dim {dim} is out of range for a weight of shape {list(shape)}"
                )
        dims = sorted({dim % ndim for dim in self.axis})
        if len(dims) < len(self.axis):
            raise ConfigError("axis", f"names a dim twice for a weight of shape {list(shape)}")
        return tuple(dims)

    @torch.no_grad()
    def project(self, param: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """w <- w * c / (eps + ||w||) for each unit with ||w|| > c; the others stay as they are."""
        norms = torch.linalg.vector_norm(param, dim=dims, keepdim=True)
        outside = norms > self.max_value
        param.mul_(torch.where(outside, self.max_value / (norms + EPSILON), 1.0))
        return outside.sum()


def _axis(axis: Any) -> tuple[int, ...] | None:
    """None, or the dims as a tuple of ints (one int, or a list of them, as Keras's `axis`)."""
    if axis is None:
        return None
    values = [axis] if isinstance(axis, int) and not isinstance(axis, bool) else axis
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise ConfigError(
            "axis", f"must be null, a dim or a non-empty list of dims (integers), got {axis!r}"
        )
    return tuple(values)


def make_constraint(kind: str, options: dict[str, Any] | None = None) -> Constraint:
    """The constraint of kind `kind`, built from those of `options` its constructor takes.

    Options set to None and options the kind does not take are ignored on purpose: every
    `constraint` option carries every knob so that sweeps over kinds compose. The kind's
    constructor checks its own values.
    """
    factory = CONSTRAINTS.get(kind, "kind")
    taken = checks.signature_names(factory)
    return factory(**{k: v for k, v in (options or {}).items() if v is not None and k in taken})
