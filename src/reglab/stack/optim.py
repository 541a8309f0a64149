"""Per-member optimization of a stacked model: each member steps exactly as its own run would.

A vectorized study trains K runs of one net as one stacked model whose parameters are tensors
[K, *member_shape] (`stacked[k]` is member k's). This module applies the `optimizer` group (sgd,
adam, adamw with every torch setting), the `scheduler` group and the trainer's
`gradient_clip_val` / `gradient_clip_algorithm` per member; the per-member values (lr, weight
decay, an `active` flag) are tensors [K].

- `MemberOptimizer`: one torch optimizer of the configured class over the stacked tensors. Torch
  steps at a reference lr (the largest lr of an active member) and member k's change is scaled by
  lr_k / reference: exact, since SGD's and Adam's states never see the lr and their step is
  linear in it; a member at the reference lr keeps torch's own result. Weight decay is applied
  here per member, as torch applies it: added to the gradient (coupled: SGD, Adam) or shrinking
  the weight by 1 - lr_k * wd_k before the step (decoupled: AdamW, Adam with
  `decoupled_weight_decay`), on weights whose *member* ndim is above 1 only (a stacked bias is
  2-D but decays as a bias), as `reglab.optim.parameter_groups` decides for one run. A member
  whose `active` flag is off (early-stopped, diverged) keeps its weights and optimizer state
  bitwise; the optimizer's step count is shared, so a member is not meant to resume.
- `MemberSchedules`: each member's own torch scheduler, built by `reglab.optim.build_scheduler`
  on a one-member stand-in optimizer, so that cosine's eta_min and a plateau schedule following
  each member's own metric come out as in the member's run; it writes the lrs into the optimizer.
- `clip_grad_norm_` / `clip_grad_value_`: torch.nn.utils' clipping with each member's own total
  norm over all its parameters (never one norm over all members), as Lightning clips one run. A
  stacked LightningModule calls them from `configure_gradient_clipping`: Lightning's own clipping
  would take one norm over the stacked tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from hydra.utils import get_class

from reglab.errors import ConfigError
from reglab.optim import DEFAULT_OPTIMIZER, OWN_KEYS, build_scheduler
from reglab.regularization.penalties import member_view

#: Optimizer classes a stacked run steps per member: their state never sees the lr and their
#: step is linear in it. Their `defaults` say whether weight decay is decoupled.
STACKABLE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
# Parameter-group keys a scheduler writes and the members may differ in.
SCHEDULED_KEYS = ("lr", "initial_lr")


def check_stackable(config: dict | None) -> None:
    """Refuse an optimizer config that a stacked run cannot step per member (a ConfigError)."""
    target = (config or DEFAULT_OPTIMIZER)["_target_"]
    if get_class(target) not in STACKABLE_OPTIMIZERS:
        names = ", ".join(f"torch.optim.{cls.__name__}" for cls in STACKABLE_OPTIMIZERS)
        raise ConfigError(
            "_target_", f"{target} is not stepped per member; stacked runs take {names}"
        )


def _members(values: float | Sequence[float] | torch.Tensor, count: int, key: str) -> torch.Tensor:
    """`values` as a float64 CPU tensor [count] (one number is every member's)."""
    tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    tensor = tensor.expand(count).clone() if tensor.ndim == 0 else tensor.clone()
    if tensor.shape != (count,):
        raise ValueError(f"{key}: one value per member ({count}), got shape {tuple(tensor.shape)}")
    return tensor


class MemberOptimizer(torch.optim.Optimizer):
    """The optimizer of `config` over stacked parameters, stepping each member as its own run.

    `named` holds (member parameter name, stacked tensor [K, ...]) pairs; `lr` and `weight_decay`
    are each member's (one number, or one per member; default: the config's). `lr`,
    `weight_decay` and `active` are float64 / bool CPU tensors [K] the caller may assign between
    steps. The torch optimizer is `inner`; this object shares its `param_groups` and `state`, so
    Lightning, step hooks and `zero_grad` see it as any optimizer. Its group's `lr` is the
    reference lr of the latest step: members' lrs are set through `lr` (or `MemberSchedules`).
    """

    def __init__(
        self,
        named: Sequence[tuple[str, torch.Tensor]],
        config: dict | None = None,
        *,
        lr: float | Sequence[float] | torch.Tensor | None = None,
        weight_decay: float | Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        check_stackable(config)
        arguments = dict(config or DEFAULT_OPTIMIZER)
        optimizer_cls = get_class(arguments.pop("_target_"))
        decay = arguments.pop("weight_decay", 0.0) or 0.0
        params = [p for _, p in named if p.requires_grad]
        if not params:
            raise ValueError("no stacked parameter requires a gradient")
        count = params[0].shape[0]
        if any(p.ndim == 0 or p.shape[0] != count for p in params):
            raise ValueError(f"every stacked parameter needs a leading member dimension of {count}")
        # Torch sees no weight decay: it is applied here, each member's own.
        self.inner = optimizer_cls([{"params": params}], weight_decay=0.0, **arguments)
        super().__init__([{"params": params}], self.inner.defaults)
        self.param_groups, self.state = self.inner.param_groups, self.inner.state
        self.members = count
        self.lr = _members(self.inner.defaults["lr"] if lr is None else lr, count, "lr")
        self.weight_decay = _members(
            decay if weight_decay is None else weight_decay, count, "weight_decay"
        )
        self.active = torch.ones(count, dtype=torch.bool)
        # As reglab.optim.parameter_groups: weights decay, biases and norm parameters do not.
        self.decays = {p: p.ndim - 1 > 1 for p in params}
        self.decoupled = bool(self.inner.defaults.get("decoupled_weight_decay"))
        self._reference = float(self.param_groups[0]["lr"])

    def member_settings(self) -> list[dict[str, Any]]:
        """Each member's group settings as its own run's optimizer holds them (lr, momentum, ...)."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return [
            {**group, "lr": lr, "weight_decay": wd}
            for lr, wd in zip(self.lr.tolist(), self.weight_decay.tolist(), strict=True)
        ]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One optimizer step of every active member (the closure first, as torch's step runs it)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._step()
        return loss

    def _step(self) -> None:
        group = self.param_groups[0]
        if group["lr"] != self._reference:
            raise RuntimeError(
                "the stacked optimizer's group lr was changed from outside; set each member's "
                "through MemberOptimizer.lr (MemberSchedules does)"
            )
        active = self.active
        if not bool(active.any()):
            return
        params = [p for p in group["params"] if p.grad is not None]
        lr = self.lr
        reference = float(lr[active].max())
        at_reference = lr == reference  # these members take torch's own result
        scaled = not bool(at_reference[active].all())
        frozen = not bool(active.all())
        kept = _Snapshot(self, params, active) if frozen else None
        decay = self.weight_decay > 0
        grads = {}
        if bool(decay.any()):
            grads = self._weight_decay([p for p in params if self.decays[p]])
        bases = [p.clone() for p in params] if scaled else []
        group["lr"] = self._reference = reference
        self.inner.step()
        for param, grad in grads.items():  # torch leaves the gradient it stepped on untouched
            param.grad = grad
        if scaled:
            ratio = torch.where(at_reference, 1.0, lr / reference if reference > 0 else 0.0)
            for param, base in zip(params, bases, strict=True):
                factor = member_view(ratio.to(param.device, param.dtype), param)
                exact = member_view(at_reference.to(param.device), param)
                param.copy_(torch.where(exact, param, base.add_((param - base).mul_(factor))))
        if kept is not None:
            kept.restore()

    def _weight_decay(self, params: list[torch.Tensor]) -> dict[torch.Tensor, torch.Tensor]:
        """Each member's weight decay, as torch applies it; the gradients it replaced."""
        if self.decoupled:  # p <- p (1 - lr_k wd_k) before the step (AdamW)
            factor = 1 - self.lr * self.weight_decay
            for param in params:
                param.mul_(member_view(factor.to(param.device, param.dtype), param))
            return {}
        # Coupled: the step reads g + wd_k p (torch negates g first under `maximize`).
        sign = -1.0 if self.param_groups[0].get("maximize") else 1.0
        grads = {}
        for param in params:
            wd = member_view((sign * self.weight_decay).to(param.device, param.dtype), param)
            grads[param] = param.grad
            param.grad = param.grad.addcmul(param, wd)
        return grads

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member k's optimizer state in the layout of its own run's optimizer's `state_dict()`.

        The groups are those `reglab.optim.build_optimizer` gives the member net (one group
        without weight decay, else weights then biases and norm parameters), with member k's lr
        and weight decay; per-coordinate state (moments, momentum buffers) is member k's slice,
        shared state (Adam's step count) is copied. A scheduler's `initial_lr` is not in it.
        """
        settings = {key: v for key, v in self.param_groups[0].items() if key != "params"}
        weight_decay = float(self.weight_decay[k])
        state: dict[int, dict[str, Any]] = {}
        param_groups = []
        index = 0
        for decay, params in self._member_groups(weight_decay):
            indices = []
            for param in params:
                entry = {
                    key: value[k].clone() if _per_coordinate(value, param) else _copy(value)
                    for key, value in self.state.get(param, {}).items()
                }
                if entry:
                    state[index] = entry
                indices.append(index)
                index += 1
            group = {**settings, "lr": float(self.lr[k]), "weight_decay": decay, "params": indices}
            param_groups.append(group)
        return {"state": state, "param_groups": param_groups}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state_dict: dict[str, Any]) -> None:
        """Put member k's optimizer state (`member_state_dict`'s, or its own run's optimizer's
        `state_dict()`) into slot k: its lr, weight decay and per-coordinate state. Shared state
        (Adam's step count) must be the same for every member loaded (one optimizer steps them).
        """
        groups = state_dict["param_groups"]
        weight_decay = float(groups[0]["weight_decay"])
        layout = [params for _, params in self._member_groups(weight_decay)]
        if [len(g["params"]) for g in groups] != [len(params) for params in layout]:
            raise ValueError(f"member {k}'s optimizer state has other parameter groups")
        self.lr[k] = float(groups[0]["lr"])
        self.weight_decay[k] = weight_decay
        for group, params in zip(groups, layout, strict=True):
            for index, param in zip(group["params"], params, strict=True):
                own = self.state[param]
                for key, value in state_dict["state"].get(index, {}).items():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape[1:]:
                        own.setdefault(key, torch.zeros_like(param))[k].copy_(value)
                    elif key not in own:
                        own[key] = _copy(value)
                    elif not _same(own[key], value):
                        raise ValueError(
                            f"member {k}'s optimizer {key} is {value}, the others' {own[key]}: "
                            "members at different steps cannot share one optimizer"
                        )

    def _member_groups(self, weight_decay: float) -> list[tuple[float, list[torch.Tensor]]]:
        """(weight decay, stacked parameters) of each group of a member's own optimizer, as
        `reglab.optim.parameter_groups` makes them (one group when nothing decays)."""
        params = list(self.decays)
        if not weight_decay:
            return [(0.0, params)]
        groups = [(weight_decay, [p for p in params if self.decays[p]])]
        no_decay = [p for p in params if not self.decays[p]]
        return groups + [(0.0, no_decay)] if no_decay else groups

    def state_dict(self) -> dict[str, Any]:
        """The torch optimizer's state dict with each member's lr, weight decay and active flag."""
        state = self.inner.state_dict()
        state["members"] = {
            "lr": self.lr.clone(),
            "weight_decay": self.weight_decay.clone(),
            "active": self.active.clone(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        state = dict(state_dict)
        members = state.pop("members")
        self.inner.load_state_dict(state)
        self.param_groups, self.state = self.inner.param_groups, self.inner.state
        self.lr = members["lr"].to(torch.float64).cpu().clone()
        self.weight_decay = members["weight_decay"].to(torch.float64).cpu().clone()
        self.active = members["active"].to(torch.bool).cpu().clone()
        self._reference = float(self.param_groups[0]["lr"])


class _Snapshot:
    """The inactive members' weights and optimizer state before a step, to put back after it."""

    def __init__(
        self, optimizer: MemberOptimizer, params: list[torch.Tensor], active: torch.Tensor
    ):
        self.optimizer, self.params = optimizer, params
        self.weights = [p.clone() for p in params]
        self.states = [
            {k: v.clone() for k, v in optimizer.state[p].items() if _per_coordinate(v, p)}
            for p in params
        ]
        self.active = active

    def restore(self) -> None:
        for param, weights, states in zip(self.params, self.weights, self.states, strict=True):
            keep = member_view(self.active.to(param.device), param)
            param.copy_(torch.where(keep, param, weights))
            for key, value in self.optimizer.state[param].items():
                if _per_coordinate(value, param):
                    # State the step created (the first step) starts at 0 for an inactive member.
                    before = states.get(key, torch.zeros_like(value))
                    value.copy_(torch.where(keep, value, before))


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _same(one: Any, other: Any) -> bool:
    if isinstance(one, torch.Tensor) or isinstance(other, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(one), torch.as_tensor(other)))
    return one == other


def _per_coordinate(value: Any, param: torch.Tensor) -> bool:
    """Whether an optimizer state entry holds one value per coordinate (moments, buffers)."""
    return isinstance(value, torch.Tensor) and value.shape == param.shape


class MemberSchedules:
    """Each member's learning-rate scheduler of the `scheduler` config, writing `optimizer.lr`.

    Member k's scheduler runs on a stand-in torch optimizer holding member k's settings, so its lr
    is the one member k's own run would have. `step(metrics)` steps the active members (a plateau
    schedule takes each member's own metric, `metrics[k]`). A scheduler that changes another
    setting (a cyclic momentum) cannot be stacked: the members share every setting but lr.
    """

    def __init__(self, optimizer: MemberOptimizer, config: dict) -> None:
        self.optimizer = optimizer
        self.interval = config.get("interval", "epoch")
        cls = type(optimizer.inner)
        self.stand_ins = []
        for settings in optimizer.member_settings():
            settings.pop("initial_lr", None)
            self.stand_ins.append(cls([{**settings, "params": [torch.zeros(0)]}]))
        self.schedulers = [build_scheduler(o, config) for o in self.stand_ins]
        self._publish()

    def step(self, metrics: Sequence[float] | torch.Tensor | None = None) -> None:
        """One scheduler step of every active member (with its own metric, if given)."""
        for k, scheduler in enumerate(self.schedulers):
            if not self.optimizer.active[k]:
                continue
            # A step of the stand-in (no gradient: it changes nothing), as the member's optimizer
            # stepped before its scheduler (else torch warns that the order is reversed).
            self.stand_ins[k].step()
            if metrics is None:
                scheduler.step()
            else:
                scheduler.step(float(metrics[k]))
        self._publish()

    def _publish(self) -> None:
        shared = self.optimizer.param_groups[0]
        own = (*SCHEDULED_KEYS, *OWN_KEYS["optimizer"], "params")
        for stand_in in self.stand_ins:
            for key, value in stand_in.param_groups[0].items():
                if key in shared and key not in own and value != shared[key]:
                    raise ConfigError(
                        "_target_",
                        f"changes the optimizer's {key}; stacked members share every "
                        "optimizer setting but lr",
                    )
        self.optimizer.lr = torch.tensor(
            [o.param_groups[0]["lr"] for o in self.stand_ins], dtype=torch.float64
        )

    def state_dict(self) -> dict[str, Any]:
        """Each member's scheduler state and lr."""
        return {
            "schedulers": [s.state_dict() for s in self.schedulers],
            "lr": [o.param_groups[0]["lr"] for o in self.stand_ins],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (and the optimizer's member lrs)."""
        for stand_in, scheduler, state, lr in zip(
            self.stand_ins, self.schedulers, state_dict["schedulers"], state_dict["lr"], strict=True
        ):
            stand_in.param_groups[0]["lr"] = lr
            scheduler.load_state_dict(state)
        self._publish()


def _grads(parameters: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad for p in parameters if p.grad is not None]


@torch.no_grad()
def clip_grad_norm_(
    parameters: Iterable[torch.Tensor],
    max_norm: float | torch.Tensor,
    norm_type: float = 2.0,
) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for each member of stacked parameters on its own.

    Member k's total norm is taken over its slices of every gradient; its gradients are scaled
    by min(max_norm_k / (norm_k + 1e-6), 1), as torch scales one run's. Returns the members'
    total norms [K] (before clipping). `max_norm`: one number, or one per member.
    """
    grads = _grads(parameters)
    if not grads:
        return torch.zeros(0)
    count = grads[0].shape[0]
    norms = torch.stack(
        [torch.linalg.vector_norm(g.reshape(count, -1), norm_type, dim=1) for g in grads]
    )
    total = torch.linalg.vector_norm(norms, norm_type, dim=0)
    limit = torch.as_tensor(max_norm, dtype=total.dtype, device=total.device)
    coefficient = torch.clamp(limit / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, [member_view(coefficient.to(g.dtype), g) for g in grads])
    return total


@torch.no_grad()
def clip_grad_value_(parameters: Iterable[torch.Tensor], clip_value: float | torch.Tensor) -> None:
    """`torch.nn.utils.clip_grad_value_` (elementwise, so per member), or one value per member."""
    for grad in _grads(parameters):
        limit = member_view(torch.as_tensor(clip_value, dtype=grad.dtype, device=grad.device), grad)
        grad.clamp_(min=-limit, max=limit)
