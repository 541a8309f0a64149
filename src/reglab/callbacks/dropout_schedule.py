"""Changes the rate of every dropout carrier once per epoch; driven by the `dropout` group's schedules.

A schedule is a function `(epoch, **knobs) -> p` in the `SCHEDULES` table: constant (p), linear
(p_start -> p_end over `epochs`), step (p times gamma every `step_size` epochs), early (p for the
first `switch_epoch` epochs, then 0: "early dropout"), late (0 until `switch_epoch`, then p: "late
dropout"). A new schedule is one registered function and one YAML file in conf/dropout. The YAML
carries every knob (so a sweep over schedules composes); each schedule gets the knobs its signature
names. At the start of each training epoch p is set on every dropout carrier
(`reglab.nn.modes.CARRIERS`): Dropout layers of every kind and DropPath (`p`: the stochastic depth
rate), LSTM/GRU dropout between stacked layers and attention dropout (`dropout`); `kinds` limits it
to some of them (e.g. `[drop_path]`: stochastic depth only). `dropout/p` is logged each epoch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
from typing_extensions import override

from reglab import checks
from reglab.callbacks.control import Control
from reglab.errors import ConfigError
from reglab.nn.modes import CARRIERS, dropout_carriers, set_dropout_p
from reglab.registry import Registry

Schedule = Callable[..., float]
SCHEDULES: Registry[Schedule] = Registry("dropout schedule")


@SCHEDULES.register("constant")
def constant(epoch: int, p: float = 0.5) -> float:
    """p in every epoch."""
    return p


@SCHEDULES.register("linear")
def linear(epoch: int, p_start: float = 0.0, p_end: float = 0.5, epochs: int = 10) -> float:
    """p_start at epoch 0, rising (or falling) linearly to p_end at epoch `epochs - 1`, then kept."""
    progress = min(1.0, epoch / max(1, epochs - 1))
    return p_start + progress * (p_end - p_start)


@SCHEDULES.register("step")
def step(epoch: int, p: float = 0.5, step_size: int = 5, gamma: float = 0.5) -> float:
    """p, multiplied by gamma every `step_size` epochs."""
    return p * gamma ** (epoch // step_size)


@SCHEDULES.register("early")
def early(epoch: int, p: float = 0.5, switch_epoch: int = 5) -> float:
    """Early dropout: p before `switch_epoch`, 0 from it on."""
    return p if epoch < switch_epoch else 0.0


@SCHEDULES.register("late")
def late(epoch: int, p: float = 0.5, switch_epoch: int = 5) -> float:
    """Late dropout: 0 before `switch_epoch`, p from it on."""
    return 0.0 if epoch < switch_epoch else p


def _dropout_p(key: str, value: Any) -> float:
    return checks.probability(key, value, allow_one=False)


# Range checks of the knobs, by name. A new schedule may add its own knobs' checks here; a knob
# without one is passed as given.
KNOB_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "p": _dropout_p,
    "p_start": _dropout_p,
    "p_end": _dropout_p,
    "epochs": lambda key, value: checks.integer(key, value, minimum=1),
    "step_size": lambda key, value: checks.integer(key, value, minimum=1),
    "gamma": lambda key, value: checks.number(key, value, 0.0, 1.0),
    "switch_epoch": lambda key, value: checks.integer(key, value, minimum=0),
}


def knob_names(schedule: Schedule) -> list[str]:
    """The knobs `schedule` takes: every argument after the epoch."""
    return list(inspect.signature(schedule).parameters)[1:]


def all_knob_names() -> set[str]:
    """Every knob some registered schedule takes."""
    return {knob for name in SCHEDULES.names() for knob in knob_names(SCHEDULES.get(name))}


class DropoutSchedule(Control):
    """Sets p of every dropout carrier from the epoch number (see module docstring)."""

    def __init__(
        self, schedule: str = "constant", kinds: list[str] | None = None, **knobs: Any
    ) -> None:
        self.function = SCHEDULES.get(schedule, "schedule")
        self.schedule = SCHEDULES.canonical(schedule)
        # None: every carrier kind; else the CARRIERS names given (any spelling; one name alone too).
        self.kinds = None
        if kinds is not None:
            kinds = [kinds] if isinstance(kinds, str) else list(kinds)
            for i, kind in enumerate(kinds):
                CARRIERS.get(kind, f"kinds[{i}]")  # an unknown kind: the valid ones are listed
            self.kinds = [CARRIERS.canonical(kind) for kind in kinds]
        # A knob no registered schedule takes is a typo, not a knob for another schedule.
        known = all_knob_names()
        for name, value in knobs.items():
            if name not in known:
                raise ConfigError(
                    name, f"no dropout schedule takes it; valid: {', '.join(sorted(known))}"
                )
            if name in KNOB_CHECKS:
                KNOB_CHECKS[name](name, value)
        self.knobs = {name: knobs[name] for name in knob_names(self.function) if name in knobs}
        self._require_knobs()

    def _require_knobs(self) -> None:
        parameters = inspect.signature(self.function).parameters
        for name in knob_names(self.function):
            if parameters[name].default is inspect.Parameter.empty and name not in self.knobs:
                raise ConfigError(name, f"the {self.schedule} schedule needs it")

    def p_at(self, epoch: int) -> float:
        """The dropout probability for `epoch` (0-based)."""
        p = self.function(epoch, **self.knobs)
        # A schedule's formula may leave [0, 1): say which schedule did, at which epoch.
        try:
            return _dropout_p("schedule", p)
        except ConfigError as error:
            raise ConfigError(
                "schedule", f"{self.schedule} gave p = {p!r} at epoch {epoch}: {error.message}"
            ) from None

    @override
    def check(self, pl_module: L.LightningModule) -> None:
        if dropout_carriers(pl_module, self.kinds):
            return
        if self.kinds is not None:
            kinds = ", ".join(self.kinds)
            raise ConfigError("kinds", f"the model has no dropout of kind {kinds} for the schedule")
        raise ConfigError(
            "",
            "the model has no dropout layer for the schedule to set (nor DropPath, attention "
            "dropout, or LSTM/GRU dropout between layers: num_layers > 1)",
        )

    @override
    def metric_names(self, stage: str) -> list[str]:
        return ["dropout/p"] if stage == "train" else []

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        p = self.p_at(trainer.current_epoch)
        set_dropout_p(pl_module, p, self.kinds)
        # The same p on every rank: sync_dist's mean leaves it unchanged.
        pl_module.log("dropout/p", p, on_step=False, on_epoch=True, sync_dist=True)
