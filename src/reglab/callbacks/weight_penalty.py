"""Adds a weight penalty strength * R(w) to training; driven by the `regularization` group.

R is a penalty kind from `reglab.regularization.PENALTIES` (l1, l2, elastic_net, or one you
register), chosen by `kind`; the callback knows no kind by name, and the node's other keys
(`l1_ratio`, ...) go to the kind's constructor.
`method: gradient` adds strength * dR/dw to `param.grad` in `on_before_optimizer_step`: after AMP
unscaling and the DDP all-reduce, once per optimizer step whatever `accumulate_grad_batches` is,
and before gradient clipping. That equals adding strength * R(w) to the loss through autograd.
`method: proximal` (for kinds with a non-smooth part, such as L1) applies that part after each
optimizer step as its proximal step (soft-thresholding for L1, so weights reach exact zeros);
the smooth part stays a gradient. The threshold is strength times the optimizer's effective
step, the step it takes on a steady gradient g once its momentum has settled, so that the fixed
point of "optimizer step, then proximal step" is the optimum of loss + strength * R at the
configured strength:
- SGD with momentum mu and dampening d: the buffer settles at (1 - d) g / (1 - mu), so the
  effective step is lr * (1 - d) / (1 - mu); with `nesterov` (step g + mu * buffer) it is
  lr * (1 - mu * d) / (1 - mu), which is lr / (1 - mu) for the d = 0 torch requires. Plain SGD
  (momentum 0, or an optimizer without a `momentum` setting) steps lr. A threshold of
  lr * strength alone would reach the optimum at strength * (1 - mu) / (1 - d) instead.
- Adam-type optimizers: the bias-corrected first moment m_hat settles at g itself (beta1 needs no
  factor), so the step is lr / (sqrt(v_hat) + eps) per coordinate. `proximal_threshold: adaptive`
  (the default) uses that per-coordinate threshold, lr * strength / (sqrt(v_hat) + eps): the
  proximal step in Adam's own metric (as in ProxGen, Yun et al. 2021). With
  `proximal_threshold: lr` the threshold is lr * strength, and Adam's normalized steps, about lr
  per weight, swamp it so hardly any weight reaches zero. For SGD both settings are the same.
The strength can ramp linearly from 0 over `warmup_epochs`; the factor is derived from the epoch
number, so the callback holds no state across epochs and a resumed run needs no state_dict.
Each epoch it logs the strength (the configured one, not the threshold), the penalty, the data
loss, their sum, the L1/L2 norms of the penalized weights and their fraction of (near) zeros.
A run without a penalty (`regularization=none`, which builds no callback) gets
`WeightPenalty.baseline()` from `reglab.run`: strength 0, so it does no gradient or proximal
work and logs the same `reg/` statistics of the same weights, and baselines overlay the
penalized runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from typing_extensions import override

from reglab import checks, log
from reglab.callbacks.control import Control, StepHooks
from reglab.errors import ConfigError
from reglab.regularization import PENALTIES, PenaltyGroup, make_penalty, select_parameters
from reglab.sparsity import NEAR_ZERO

METHODS = ("gradient", "proximal")
THRESHOLDS = ("lr", "adaptive")


# What `on_train_epoch_end` logs under reg/ (data_loss and objective: when the module reports them).
LOGGED = (
    "strength",
    "penalty",
    "l1_norm",
    "l2_norm",
    "zero_fraction",
    "near_zero_fraction",
    "data_loss",
    "objective",
)


def ignored_keys(cfg: Mapping[str, Any]) -> list[str]:
    """The `regularization.*` keys of a run's config that its penalty kind does not take, sorted.

    One config node serves every kind (conf/regularization/base.yaml), so an l1 or l2 run carries
    elastic_net's `l1_ratio` unread. metrics.json records these keys, so that the report (which
    imports no penalty code) leaves them out when it compares runs; [] without a known kind.
    """
    node = cfg.get("regularization")
    kind = node.get("kind") if isinstance(node, Mapping) else None
    penalty = PENALTIES.find(kind) if isinstance(kind, str) else None
    if penalty is None:
        return []
    own = set(checks.signature_names(WeightPenalty)) | set(checks.signature_names(penalty))
    every = {name for k in PENALTIES.names() for name in checks.signature_names(PENALTIES.get(k))}
    return sorted(f"regularization.{name}" for name in every - own)


class WeightPenalty(Control):
    """Weight penalty strength * R(w) on the selected parameters (see module docstring).

    `options` are the penalty kind's own arguments (`l1_ratio` for elastic_net); those the kind
    does not take are ignored, so one config node serves every kind.
    """

    def __init__(
        self,
        kind: str = "l2",
        strength: float = 1e-4,
        method: str = "gradient",
        include: list[str] | None = None,
        exclude: list[str] | None = None,
        strengths: dict[str, float] | None = None,
        warmup_epochs: int = 0,
        proximal_threshold: str = "adaptive",
        **options: Any,
    ) -> None:
        self.penalty = make_penalty(kind, options)
        self.kind = kind
        self.strength = checks.number("strength", strength, 0.0)
        self.method = checks.choice("method", method, METHODS)
        if method == "proximal" and not self.penalty.has_l1_part:
            raise ConfigError(
                "method",
                f"proximal needs a penalty with a non-smooth (L1) part; kind {kind!r} has none",
            )
        self.warmup_epochs = checks.integer("warmup_epochs", warmup_epochs)
        self.proximal_threshold = checks.choice(
            "proximal_threshold", proximal_threshold, THRESHOLDS
        )
        strengths = checks.mapping("strengths", strengths)
        for pattern, value in strengths.items():
            checks.number(f"strengths.{pattern}", value, 0.0)
        self.include, self.exclude, self.strengths = include, exclude, strengths
        self.groups: list[PenaltyGroup] = []
        self._scale = 1.0
        self.step_hooks = StepHooks()
        self.last_logged: dict[str, float] = {}  # what the latest epoch end logged

    @classmethod
    def baseline(cls) -> WeightPenalty:
        """No penalty (strength 0), only the `reg/` statistics of the default weights."""
        return cls(kind="l2", strength=0.0)

    # --- set-up ---------------------------------------------------------------------------------
    def parameter_groups(self, pl_module: L.LightningModule) -> list[PenaltyGroup]:
        """The penalized parameters of `pl_module`, grouped by strength."""
        return select_parameters(
            pl_module, self.strength, self.include, self.exclude, self.strengths
        )

    @override
    def check(self, pl_module: L.LightningModule) -> None:
        """Refuse a model of which `include` / `exclude` select no parameter."""
        self.parameter_groups(pl_module)

    @override
    def metric_names(self, stage: str) -> list[str]:
        return [f"reg/{name}" for name in LOGGED] if stage == "train" else []

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.groups = self.parameter_groups(pl_module)

    def penalizes(self) -> bool:
        """Whether some parameter has a strength above 0 (else training is left as it is)."""
        return self.strength > 0 or any(value > 0 for value in self.strengths.values())

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.method != "proximal" or not self.penalizes():
            return
        for optimizer in trainer.optimizers:
            for settings in optimizer.param_groups:
                effective_step(settings)  # refuses momentum >= 1 before training
        adaptive_optimizers = [o for o in trainer.optimizers if _second_moment_state(o)]
        if self.proximal_threshold == "lr" and adaptive_optimizers:
            log.warning(
                "proximal step with an Adam-type optimizer and the threshold lr * strength: "
                "Adam's steps are about lr per weight, so few weights reach zero. "
                "Use proximal_threshold=adaptive or SGD."
            )
        # The proximal step follows every optimizer step (Lightning has no hook right after it).
        self.step_hooks.register(trainer, self.after_optimizer_step)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step_hooks.remove()

    # --- the penalty ------------------------------------------------------------------------------
    def scale(self, epoch: int) -> float:
        """Warm-up factor: 0 at epoch 0, rising linearly to 1 at `warmup_epochs`."""
        return 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._scale = self.scale(trainer.current_epoch)

    @override
    @torch.no_grad()  # as torch.optim's own steps: a penalty kind may edit tensors in place
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # With the proximal method the non-smooth part is applied after the step, not here.
        smooth_only = self.method == "proximal"
        for group in self.groups:
            strength = group.strength * self._scale
            if strength <= 0:  # strength 0 (a baseline), or the warm-up's first epoch
                continue
            pairs = [(p, p.grad) for p in group.params if p.grad is not None]
            if pairs:
                params, grads = map(list, zip(*pairs, strict=True))
                self.penalty.add_gradient(params, grads, strength, smooth_only)

    @torch.no_grad()
    def after_optimizer_step(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any
    ) -> None:
        """The proximal step of the penalty's non-smooth part (an optimizer step post-hook).

        Its threshold is strength times the optimizer's effective step (see the module docstring).
        """
        settings = {id(p): g for g in optimizer.param_groups for p in g["params"]}
        adaptive = self.proximal_threshold == "adaptive"
        for group in self.groups:
            strength = group.strength * self._scale
            if strength <= 0:  # strength 0, or the warm-up's first epoch
                continue
            by_step: dict[float, list[torch.Tensor]] = {}
            per_weight: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
            for param in group.params:
                if id(param) not in settings:
                    continue
                step = effective_step(settings[id(param)])
                scale = adam_scale(optimizer, param, settings[id(param)]) if adaptive else None
                if scale is None:
                    by_step.setdefault(step, []).append(param)
                else:
                    per_weight[0].append(param)
                    per_weight[1].append(scale.mul_(step * strength))
            for step, params in by_step.items():
                self.penalty.proximal_step(params, step * strength)
            if per_weight[0]:  # one foreach pass over every Adam-scaled parameter
                self.penalty.proximal_step(*per_weight)

    def value(self) -> torch.Tensor:
        """The current penalty: sum over groups of strength * warm-up factor * R(w)."""
        total = torch.zeros(())
        for group in self.groups:
            total = total + group.strength * self._scale * self.penalty.value(group.params).cpu()
        return total

    # --- logging ----------------------------------------------------------------------------------
    @override
    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The weights, hence the penalty statistics, are the same on every rank; the data loss is
        # this rank's: sync_dist averages it into the epoch's over every rank's (equal) shard.
        penalty = self.value().item()
        stats = {
            "reg/strength": self.strength * self._scale,
            "reg/penalty": penalty,
            **weight_statistics([p.detach() for group in self.groups for p in group.params]),
        }
        data_loss = getattr(pl_module, "epoch_data_loss", lambda stage: None)("train")
        if data_loss is not None:
            stats["reg/data_loss"] = data_loss
            stats["reg/objective"] = data_loss + penalty
        pl_module.log_dict(stats, on_step=False, on_epoch=True, sync_dist=True)
        self.last_logged = stats

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """What the training epoch's end logged, before Lightning publishes it.

        As the module's `epoch_metrics`: a checkpoint written at the end of the epoch (last.ckpt)
        records them in the run's history.
        """
        return dict(self.last_logged) if stage == "train" else {}


def weight_statistics(params: list[torch.Tensor]) -> dict[str, float]:
    """The `reg/` norms of the penalized weights and their fraction of (near) zeros."""
    flat = torch.cat([p.reshape(-1) for p in params])
    return {
        "reg/l1_norm": flat.abs().sum().item(),
        "reg/l2_norm": flat.norm().item(),
        "reg/zero_fraction": (flat == 0).float().mean().item(),
        "reg/near_zero_fraction": (flat.abs() < NEAR_ZERO).float().mean().item(),
    }


def effective_step(settings: dict[str, Any]) -> float:
    """The step an optimizer's parameter group takes on a steady gradient, per unit gradient.

    lr * (1 - d) / (1 - mu) for heavy-ball momentum mu with dampening d, lr * (1 - mu d) / (1 - mu)
    with Nesterov: the momentum buffer settles at (1 - d) g / (1 - mu). Plain lr without momentum.
    Adam's bias-corrected first moment settles at g, so Adam's per-coordinate scaling
    (`adam_scale`) is the only other factor.
    """
    lr = float(settings["lr"])
    momentum = float(settings.get("momentum") or 0.0)
    if momentum == 0:
        return lr
    if not 0 < momentum < 1:
        # No steady state: the buffer grows without bound, so no threshold reaches the optimum.
        raise ConfigError(
            "method", f"proximal needs the optimizer's momentum in [0, 1), got {momentum}"
        )
    dampening = float(settings.get("dampening") or 0.0)
    if settings.get("nesterov"):
        return lr * (1 - momentum * dampening) / (1 - momentum)
    return lr * (1 - dampening) / (1 - momentum)


def _second_moment_state(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer keeps Adam's running squared gradients (Adam, AdamW, NAdam, ...)."""
    return any("betas" in group for group in optimizer.param_groups)


@torch.no_grad()
def adam_scale(
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
