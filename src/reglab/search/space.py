"""The search space of an Optuna search: samplers, pruners, parameter types, and their checks.

The `hparams_search` group (conf/hparams_search/) names a `sampler` (tpe | random), a `pruner`
(median | hyperband | none), a `direction` and the trial budget (`n_trials`, `total_trials`), and
`params`: one entry per config key to search, of a registered type (float, int, categorical)
with its own fields. `check_search` checks the whole node before any trial, drawing the space's
first values (`FirstValues`) so that a bad field fails once, with one line naming its key. A new
sampler, pruner or parameter type is one registered function.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from reglab import checks
from reglab.build import config_path
from reglab.errors import ConfigError
from reglab.registry import Registry

# Each table maps a config value to what builds it: a new sampler, pruner or parameter type is
# one registered function.
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner")
PARAM_TYPES: Registry[Callable[..., Any]] = Registry("parameter type")

DIRECTIONS = ("minimize", "maximize")


@SAMPLERS.register("tpe")
def tpe_sampler(seed: int) -> Any:
    """Optuna's default Tree-structured Parzen Estimator.

    With its constant liar: trials other workers are running count as bad results, so parallel
    workers do not all propose near the same promising point.
    """
    import optuna

    with warnings.catch_warnings():  # experimental before Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


@SAMPLERS.register("random")
def random_sampler(seed: int) -> Any:
    """Independent uniform draws."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@PRUNERS.register("median")
def median_pruner(max_epochs: int) -> Any:
    """Stop a trial whose metric is worse than the median of earlier trials at the same epoch."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


@PRUNERS.register("hyperband")
def hyperband_pruner(max_epochs: int) -> Any:
    """Hyperband over 1..max_epochs epochs."""
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)


@PRUNERS.register("none")
def no_pruner(max_epochs: int) -> Any:
    """Every trial runs to its end."""
    import optuna

    return optuna.pruners.NopPruner()


# A parameter type checks its own fields (ConfigError keyed by the field: `low`, `choices`) and
# asks the trial for a value; `suggest` adds `hparams_search.params.<key>` to the key.
@PARAM_TYPES.register("float")
def suggest_float(trial: Any, name: str, spec: DictConfig) -> float:
    """A float in [low, high], log-uniform with `log: true`."""
    low, high, log_scale = _bounds(spec, checks.number)
    return trial.suggest_float(name, low, high, log=log_scale)


@PARAM_TYPES.register("int")
def suggest_int(trial: Any, name: str, spec: DictConfig) -> int:
    """An integer in [low, high], log-uniform with `log: true`."""
    low, high, log_scale = _bounds(spec, lambda key, value: checks.integer(key, value, None))
    return trial.suggest_int(name, low, high, log=log_scale)


@PARAM_TYPES.register("categorical")
def suggest_categorical(trial: Any, name: str, spec: DictConfig) -> Any:
    """One of `choices`."""
    _known_fields(spec, ("type", "choices"))
    choices = spec.get("choices")
    if not isinstance(choices, (list, ListConfig)) or not choices:
        raise ConfigError("choices", f"must be a non-empty list, got {choices!r}")
    for i, choice in enumerate(choices):
        # Optuna stores choices as they are: only scalars compare and persist reliably.
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise ConfigError(
                f"choices[{i}]", f"must be a number, string, bool or null: {choice!r}"
            )
    return trial.suggest_categorical(name, list(choices))


def _bounds(spec: DictConfig, number: Callable[[str, Any], Any]) -> tuple[Any, Any, bool]:
    """`low`, `high` and `log` of a range, checked as Optuna would only check them mid-study."""
    _known_fields(spec, ("type", "low", "high", "log"))
    high = number("high", spec.get("high"))
    low = number("low", spec.get("low"))
    if low > high:
        raise ConfigError("low", f"must be <= high ({high!r}), got {low!r}")
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise ConfigError("log", f"must be true or false, got {log_scale!r}")
    if log_scale and low <= 0:
        raise ConfigError("low", f"must be > 0 with log: true, got {low!r}")
    return low, high, log_scale


def _known_fields(spec: DictConfig, valid: tuple[str, ...]) -> None:
    for field in spec:
        checks.choice(str(field), field, valid)


class FirstValues:
    """A stand-in trial answering every suggestion with its first value (`low`, first choice).

    Drawing from it runs every parameter type's checks without a study, and gives one concrete
    trial config to check before the first real trial.
    """

    def suggest_float(self, name: str, low: float, high: float, **options: Any) -> float:
        """`low`."""
        return low

    def suggest_int(self, name: str, low: int, high: int, **options: Any) -> int:
        """`low`."""
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """The first choice."""
        return choices[0]


def suggest(trial: Any, params: DictConfig) -> dict[str, Any]:
    """Draw one value per parameter of the search space: {override key: value}."""
    values = {}
    for key, spec in params.items():
        with config_path(f"params.{key}"):
            checks.mapping("", spec)
            values[key] = PARAM_TYPES.get(spec.get("type"), "type")(trial, key, spec)
    return values


def check_search(cfg: DictConfig) -> dict[str, Any]:
    """Check the `hparams_search` node and its space; return the space's first values."""
    spec = cfg.hparams_search
    with config_path("hparams_search"):
        SAMPLERS.get(spec.get("sampler", "tpe"), "sampler")
        PRUNERS.get(spec.get("pruner", "median"), "pruner")
        checks.choice("direction", spec.get("direction"), DIRECTIONS)
        for budget in ("n_trials", "total_trials"):
            if spec.get(budget) is not None:
                checks.integer(budget, spec.get(budget), 1)
        if spec.get("n_trials") is None and spec.get("total_trials") is None:
            raise ConfigError(
                "n_trials",
                "must be a number of trials for this worker (or set hparams_search.total_trials, "
                "the study's), got None",
            )
        checks.integer("heartbeat_interval", spec.get("heartbeat_interval", 60), 1)
        if spec.get("grace_period") is not None:
            checks.integer("grace_period", spec.grace_period, 1)
        if not isinstance(spec.get("study_name"), str) or not spec.study_name:
            raise ConfigError(
                "study_name", f"must be a non-empty name, got {spec.get('study_name')!r}"
            )
        if not checks.mapping("params", spec.get("params")):
            raise ConfigError("params", "is empty: name at least one config key to search")
        missing = object()
        for key in spec.params:
            if OmegaConf.select(cfg, str(key), default=missing) is missing:
                raise ConfigError(
                    f"params.{key}",
                    f"{key!r} is not a key of the config (a typo, or a group option without it)",
                )
        return suggest(FirstValues(), spec.params)
