"""Projects weights back onto a constraint set after every optimizer step; driven by the
`constraint` group (`constraint=max_norm`).

The constraint is a kind from `reglab.regularization.CONSTRAINTS` (max_norm, or one you register),
chosen by `kind`; the callback knows no kind by name, and the node's other keys (`max_value`,
`axis`) go to the kind's constructor. With max_norm each unit's incoming weight vector is
rescaled onto the ball of radius `max_value` whenever a step takes it outside (Srivastava et al.
2014; Keras's `MaxNorm`, applied as Keras applies a `kernel_constraint`: after each update).
The weights before the first step are left as they were initialized.

Which weights: by default the `weight` of every Linear and convolution layer (transposed ones
included), whose units are a Linear's output features and a convolution's output channels (dim 0
of the weight; dim 1 of a transposed convolution's [in, out, *kernel] weight). `include` /
`exclude` are glob patterns on parameter names (as the weight penalty's): `include` picks any
weights with two dims or more instead (an LSTM's `weight_ih_l0`, whose rows are its gates'
units), units along dim 0. Parameters that do not train are left alone.

The projection runs in an optimizer step post-hook (Lightning has no hook right after the step),
so it follows every optimizer step, once per step whatever `accumulate_grad_batches` is, and a
step AMP's grad scaler skips is not followed by one; on every DDP rank alike (the weights are
the same there). It follows the weight penalty's proximal step (the `regularization` control is
set up first), so the constraint holds after each step.
Each epoch it logs `constraint/clipped_fraction`: the share of the constrained units that a step
moved, averaged over the epoch's steps (counted on the device; read once per epoch). The count
starts again each epoch, so the callback holds no state across epochs and a resumed run needs no
state_dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import lightning as L
import torch
from torch import nn
from typing_extensions import override

from reglab.callbacks.control import Control, StepHooks
from reglab.errors import ConfigError
from reglab.regularization import make_constraint, select_parameters

# The layers whose `weight` is constrained by default: a unit's incoming weights are a slice of it.
LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
CLIPPED = "constraint/clipped_fraction"


@dataclass
class Target:
    """One constrained weight: its name, the tensor, the dims a unit spans and its unit count."""

    name: str
    param: torch.Tensor
    dims: tuple[int, ...]
    units: int


class WeightConstraint(Control):
    """The constraint `kind` on the selected weights after every optimizer step (module docstring).

    `options` are the constraint kind's own arguments (`max_value`, `axis` for max_norm); those
    the kind does not take are ignored, so one config node serves every kind.
    """

    def __init__(
        self,
        kind: str = "max_norm",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        self.constraint = make_constraint(kind, options)
        self.kind = kind
        self.include = _patterns("include", include)
        self.exclude = _patterns("exclude", exclude)
        self.targets: list[Target] = []
        self.step_hooks = StepHooks()
        self._moved: torch.Tensor | None = None  # units moved this epoch, on the weights' device
        self._seen = 0  # units the epoch's steps projected, moved or not
        self.last_logged: dict[str, float] = {}  # what the latest epoch end logged

    # --- set-up ---------------------------------------------------------------------------------
    def select(self, pl_module: nn.Module) -> list[Target]:
        """The constrained weights of `pl_module`, each with the dims its units span."""
        unit_dims: dict[int, int] = {}  # id(weight) -> its unit dim, for the default layers
        for module in pl_module.modules():
            if isinstance(module, LAYERS) and isinstance(module.weight, nn.Parameter):
                unit_dims[id(module.weight)] = 1 if getattr(module, "transposed", False) else 0
        include = self.include
        if include is None:
            include = [
                name for name, param in pl_module.named_parameters() if id(param) in unit_dims
            ]
            if not include:
                raise ConfigError(
                    "", "needs a model with Linear or convolution layers, or `include` patterns"
                )
        groups = select_parameters(pl_module, 1.0, include, self.exclude)
        targets = []
        for group in groups:
            for name, param in zip(group.names, group.params, strict=True):
                if param.ndim < 2:
                    raise ConfigError(
                        "include",
                        f"{name} has shape {list(param.shape)}: a constraint acts on weight "
                        "matrices and kernels (two dims or more), whose units it bounds",
                    )
                dims = self.constraint.reduce_dims(param.shape, unit_dims.get(id(param), 0))
                units = param.numel() // max(1, prod(param.shape[d] for d in dims))
                targets.append(Target(name, param, dims, units))
        return targets

    @override
    def check(self, pl_module: L.LightningModule) -> None:
        """Refuse a model with nothing to constrain, or whose weights the kind's settings don't fit."""
        self.select(pl_module)

    @override
    def metric_names(self, stage: str) -> list[str]:
        return [CLIPPED] if stage == "train" else []

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.targets = self.select(pl_module)

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step_hooks.register(trainer, self.after_optimizer_step)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step_hooks.remove()

    # --- the projection ---------------------------------------------------------------------------
    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._moved, self._seen = None, 0

    @torch.no_grad()
    def after_optimizer_step(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> None:
        """Project the weights this optimizer steps (an optimizer step post-hook)."""
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        moved = []
        for target in self.targets:
            if id(target.param) in stepped:
                moved.append(self.constraint.project(target.param, target.dims))
                self._seen += target.units
        if moved:
            total = torch.stack(moved).sum()
            self._moved = total if self._moved is None else self._moved + total

    # --- logging ----------------------------------------------------------------------------------
    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._moved is None or not self._seen:  # no step this epoch
            return
        stats = {CLIPPED: self._moved.item() / self._seen}
        # The weights, hence the counts, are the same on every rank: averaging changes nothing.
        pl_module.log_dict(stats, on_step=False, on_epoch=True, sync_dist=True)
        self.last_logged = stats

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """What the training epoch's end logged (a checkpoint at the epoch's end records it)."""
        return dict(self.last_logged) if stage == "train" else {}


def _patterns(key: str, value: Any) -> list[str] | None:
    """None, or a list of glob patterns (a string would be read as one pattern per character)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            key, f"must be null or a list of glob patterns on parameter names, got {value!r}"
        )
    if not all(isinstance(pattern, str) for pattern in value):
        raise ConfigError(key, f"must be a list of glob patterns (strings), got {list(value)!r}")
    return list(value)
