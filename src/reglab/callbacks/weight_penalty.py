"""Adds an L1 / L2 / ElasticNet weight penalty to training; driven by the `regularization` group.

`method: gradient` adds strength * dR/dw to `param.grad` in `on_before_optimizer_step`: after AMP
unscaling and the DDP all-reduce, once per optimizer step whatever `accumulate_grad_batches` is,
and before gradient clipping. That equals adding strength * R(w) to the loss through autograd.
`method: proximal` applies the L1 part after each optimizer step as soft-thresholding with
threshold lr * strength * l1_ratio, so weights reach exact zeros (the L2 part stays a gradient).
With an Adam-type optimizer, `proximal_threshold: adaptive` (the default) makes the threshold
per coordinate, lr * strength * l1_ratio / (sqrt(v_hat) + eps): the proximal step in Adam's own
metric (as in ProxGen, Yun et al. 2021). Without it Adam's normalized steps, about lr per weight,
swamp the threshold and hardly any weight reaches zero. For SGD both settings are lr * strength.
The strength can ramp linearly from 0 over `warmup_epochs`. Each epoch it logs the penalty, the
data loss, their sum, the L1/L2 norms of the penalized weights and their fraction of (near) zeros.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.hooks import RemovableHandle

from reglab import checks
from reglab.errors import ConfigError
from reglab.regularization import PenaltyGroup, make_penalty, select_parameters

METHODS = ("gradient", "proximal")
THRESHOLDS = ("lr", "adaptive")
NEAR_ZERO = 1e-3


class WeightPenalty(L.Callback):
    """Weight penalty strength * R(w) on the selected parameters (see module docstring)."""

    def __init__(
        self,
        kind: str = "l2",
        strength: float = 1e-4,
        l1_ratio: float | None = None,
        method: str = "gradient",
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        strengths: dict[str, float] | None = None,
        warmup_epochs: int = 0,
        proximal_threshold: str = "adaptive",
    ) -> None:
        self.penalty = make_penalty(kind, l1_ratio)
        self.kind = kind
        self.strength = checks.number("regularization.strength", strength, 0.0)
        self.method = checks.choice("regularization.method", method, METHODS)
        if method == "proximal" and self.penalty.l1_ratio == 0:
            raise ConfigError(
                "regularization.method", "proximal needs an L1 part (l1 or elastic_net)"
            )
        self.warmup_epochs = checks.integer("regularization.warmup_epochs", warmup_epochs)
        self.proximal_threshold = checks.choice(
            "regularization.proximal_threshold", proximal_threshold, THRESHOLDS
        )
        for pattern, value in (strengths or {}).items():
            checks.number(f"regularization.strengths.{pattern}", value, 0.0)
        self.include, self.exclude, self.strengths = include, exclude, strengths
        self.groups: list[PenaltyGroup] = []
        self._scale = 1.0
        self._hooks: list[RemovableHandle] = []

    # --- set-up ---------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Select the penalized parameters (after the module is built, before training)."""
        self.groups = select_parameters(
            pl_module, self.strength, self.include, self.exclude, self.strengths
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """For the proximal method, soft-threshold right after every optimizer step."""
        if self.method == "proximal":
            adaptive_optimizers = [o for o in trainer.optimizers if _second_moment_state(o)]
            if self.proximal_threshold == "lr" and adaptive_optimizers:
                rank_zero_warn(
                    "reglab: proximal L1 with an Adam-type optimizer and the threshold lr * "
                    "strength: Adam's steps are about lr per weight, so few weights reach zero. "
                    "Use regularization.proximal_threshold=adaptive or optimizer=sgd."
                )
            self._hooks = [
                optimizer.register_step_post_hook(self._proximal_step)
                for optimizer in trainer.optimizers
            ]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remove the optimizer hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # --- the penalty ------------------------------------------------------------------------------
    def scale(self, epoch: int) -> float:
        """Warm-up factor: 0 at epoch 0, rising linearly to 1 at `warmup_epochs`."""
        return 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Set this epoch's strength factor."""
        self._scale = self.scale(trainer.current_epoch)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """grad += strength * dR/dw (only the L2 part when L1 is applied proximally)."""
        with_l1 = self.method == "gradient"
        for group in self.groups:
            pairs = [(p, p.grad) for p in group.params if p.grad is not None]
            if pairs and group.strength * self._scale > 0:
                params, grads = map(list, zip(*pairs, strict=True))
                self.penalty.add_gradient(params, grads, group.strength * self._scale, with_l1)

    def _proximal_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        settings = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        adaptive = self.proximal_threshold == "adaptive"
        for group in self.groups:
            strength = group.strength * self._scale
            if strength <= 0:  # strength 0, or the warm-up's first epoch
                continue
            by_lr: dict[float, list[torch.Tensor]] = {}
            per_weight: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
            for param in group.params:
                if id(param) not in settings:
                    continue
                lr = float(settings[id(param)]["lr"])
                scale = _adam_scale(optimizer, param, settings[id(param)]) if adaptive else None
                if scale is None:
                    by_lr.setdefault(lr, []).append(param)
                else:
                    per_weight[0].append(param)
                    per_weight[1].append(scale.mul_(lr * strength))
            for lr, params in by_lr.items():
                self.penalty.proximal_step(params, lr * strength)
            if per_weight[0]:  # one foreach pass over every Adam-scaled parameter
                self.penalty.proximal_step(*per_weight)

    def value(self) -> torch.Tensor:
        """The current penalty: sum over groups of strength * warm-up factor * R(w)."""
        total = torch.zeros(())
        for group in self.groups:
            total = total + group.strength * self._scale * self.penalty.value(group.params).cpu()
        return total

    # --- logging ----------------------------------------------------------------------------------
    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Log penalty, data loss, objective, norms and sparsity of the penalized weights."""
        params = [p.detach() for group in self.groups for p in group.params]
        flat = torch.cat([p.reshape(-1) for p in params])
        penalty = self.value().item()
        stats = {
            "reg/strength": self.strength * self._scale,
            "reg/penalty": penalty,
            "reg/l1_norm": flat.abs().sum().item(),
            "reg/l2_norm": flat.norm().item(),
            "reg/zero_fraction": (flat == 0).float().mean().item(),
            "reg/near_zero_fraction": (flat.abs() < NEAR_ZERO).float().mean().item(),
        }
        data_loss = getattr(pl_module, "epoch_data_loss", lambda stage: None)("train")
        if data_loss is not None:
            stats["reg/data_loss"] = data_loss
            stats["reg/objective"] = data_loss + penalty
        pl_module.log_dict(stats, on_step=False, on_epoch=True, sync_dist=False)


def _second_moment_state(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer keeps Adam's running squared gradients (Adam, AdamW, NAdam, ...)."""
    return any("betas" in group for group in optimizer.param_groups)


@torch.no_grad()
def _adam_scale(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, settings: dict[str, Any]
) -> torch.Tensor | None:
    """1 / (sqrt(v_hat) + eps) per coordinate, as Adam scales its step; None without Adam state."""
    state = optimizer.state.get(param, {})
    second_moment = state.get("max_exp_avg_sq", state.get("exp_avg_sq"))
    if second_moment is None or "step" not in state or "betas" not in settings:
        return None
    step = float(state["step"])
    bias_correction = 1.0 - settings["betas"][1] ** step
    denominator = (second_moment / bias_correction).sqrt_().add_(settings["eps"])
    return denominator.reciprocal_()
