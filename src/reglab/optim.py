"""Optimizer and learning-rate scheduler from their config dicts, with their values checked first.

Weight decay (`weight_decay`) applies to weights with ndim > 1 only; biases and normalization
parameters sit in a no-decay group. Values torch would accept and then fail on mid-run (a step
size of 0) or reject with a message that names no key are checked here, before anything is built;
errors name the optimizer's or scheduler's own argument (`lr`, `step_size`): the config layer
adds the group (`optimizer.lr`).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import get_class
from torch import nn

from reglab import checks
from reglab.errors import ConfigError

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3}
# Keys reglab reads itself and does not pass to the constructor.
OWN_KEYS = {"optimizer": ("_target_", "weight_decay"), "scheduler": ("_target_", "interval")}
# Ranges of the optimizer and scheduler arguments torch users set from configs.
# A learning rate of 0 trains nothing (the run ends `ok` at chance accuracy).
POSITIVE = ("lr",)
NON_NEGATIVE = ("weight_decay", "eps", "eta_min", "patience")
# Momentum 1 never forgets a gradient (the steps grow without bound); dampening 1 ignores them.
BELOW_ONE = ("momentum",)
FRACTIONS = ("dampening",)
AT_LEAST_ONE = ("step_size", "T_max")
INTERVALS = ("epoch", "step")
PLATEAU_MODES = ("min", "max")


def check_optimizer(config: dict) -> None:
    """Refuse unknown arguments and out-of-range values of an optimizer config."""
    _check_values(config, "optimizer")
    betas = config.get("betas")
    if betas is not None and (isinstance(betas, str) or len(betas) != 2):
        raise ConfigError("betas", f"must be two numbers in [0, 1) ([0.9,0.999]), got {betas!r}")
    for index, beta in enumerate(betas or ()):
        checks.number(f"betas[{index}]", beta, 0.0, 1.0, high_open=True)
    if config.get("nesterov") and (not config.get("momentum") or config.get("dampening", 0)):
        raise ConfigError("nesterov", "needs momentum > 0 and dampening 0")


def check_scheduler(config: dict) -> None:
    """Refuse unknown arguments and out-of-range values of a scheduler config."""
    _check_values(config, "scheduler")
    checks.choice("interval", config.get("interval", "epoch"), INTERVALS)
    if "gamma" in config:
        checks.number("gamma", config["gamma"], 0.0)
    if "factor" in config:  # ReduceLROnPlateau: the new lr is lr * factor, so 0 < factor < 1
        checks.number("factor", config["factor"], 0.0, 1.0, low_open=True, high_open=True)
    if "mode" in config and "ReduceLROnPlateau" in str(config["_target_"]):
        checks.choice("mode", config["mode"], PLATEAU_MODES)
    if "milestones" in config:  # MultiStepLR: torch takes any iterable and never reaches `[a]`
        check_milestones(config["milestones"])


def check_milestones(milestones: Any) -> None:
    """A list of epochs (or steps, interval step) >= 1, each later than the one before."""
    if not isinstance(milestones, list | tuple):
        raise ConfigError("milestones", f"must be a list of epochs ([100,150]), got {milestones!r}")
    for index, epoch in enumerate(milestones):
        checks.integer(f"milestones[{index}]", epoch, minimum=1)
        if index and epoch <= milestones[index - 1]:
            raise ConfigError("milestones", f"must increase, got {list(milestones)}")


def _check_values(config: dict, group: str) -> None:
    if "_target_" not in config:
        raise ConfigError(
            next(iter(config), ""), f"this {group} option builds nothing; choose one that does"
        )
    try:
        cls = get_class(config["_target_"])
    except (ImportError, ValueError) as error:
        message = str(error).splitlines()[0].rstrip(":")  # Hydra's is several lines
        raise ConfigError("_target_", f"{message}: no such class") from None
    own = OWN_KEYS[group]
    checks.arguments("", cls, {k: v for k, v in config.items() if k not in own})
    ranges = [
        *((key, {"low_open": True}) for key in POSITIVE),
        *((key, {}) for key in NON_NEGATIVE),
        *((key, {"high": 1.0, "high_open": True}) for key in BELOW_ONE),
        *((key, {"high": 1.0}) for key in FRACTIONS),
    ]
    for key, bounds in ranges:
        if config.get(key) is not None:
            checks.number(key, config[key], 0.0, **bounds)
    for key in AT_LEAST_ONE:
        if key in config:
            checks.integer(key, config[key], minimum=1)


def build_optimizer(net: nn.Module, config: dict | None) -> torch.optim.Optimizer:
    """The optimizer of `config`, with decoupled weight decay on weights (ndim > 1) only."""
    arguments = dict(config or DEFAULT_OPTIMIZER)
    optimizer_cls = get_class(arguments.pop("_target_"))
    weight_decay = arguments.pop("weight_decay", 0.0)
    return optimizer_cls(parameter_groups(net, weight_decay), **arguments)


def build_scheduler(optimizer: torch.optim.Optimizer, config: dict) -> Any:
    """The learning-rate scheduler of `config` (its `interval` is read by the module)."""
    arguments = {k: v for k, v in config.items() if k not in OWN_KEYS["scheduler"]}
    return get_class(config["_target_"])(optimizer, **arguments)


def parameter_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Weights (ndim > 1) decay; biases and normalization parameters do not.

    Without weight decay, one group: every group costs the optimizer a pass of its own per step.
    """
    if not weight_decay:
        return [{"params": [p for p in net.parameters() if p.requires_grad], "weight_decay": 0.0}]
    decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
