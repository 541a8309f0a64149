"""Changes the rate of every dropout carrier once per epoch; driven by the `dropout` group's schedules.

A schedule is a function `(epoch, **knobs) -> p` in the `SCHEDULES` table with the checks of its
knobs: constant (p), linear (p_start -> p_end over `epochs`), step (p times gamma every `step_size`
epochs), early (p for the first `switch_epoch` epochs, then 0: "early dropout"), late (0 until
`switch_epoch`, then p: "late dropout"). A new schedule is one `@schedule(name, knob=check)`
function and one YAML file in conf/dropout. The YAML carries every knob (so a sweep over schedules
composes); each schedule gets the knobs its signature names, and each knob is checked by the
schedules that take it (one `reglab: error:` line naming `dropout.<knob>`).

At the start of each training epoch p is set on every dropout carrier (`reglab.nn.modes.CARRIERS`):
Dropout layers of every kind and DropPath (`p`: the stochastic depth rate), LSTM/GRU dropout
between stacked layers and attention dropout (`dropout`); `kinds` limits it to some of them (e.g.
`[drop_path]`: stochastic depth only). `dropout/p` is logged each epoch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
from typing_extensions import override

from reglab import checks
from reglab.callbacks.control import Control
from reglab.errors import ConfigError
from reglab.nn.modes import CARRIERS, dropout_carriers, set_dropout_p
from reglab.registry import Registry

Check = Callable[[str, Any], Any]  # check(key, value): the value, or a ConfigError on `key`


def dropout_p(key: str, value: Any) -> float:
    """A dropout rate: in [0, 1)."""
    return checks.probability(key, value, allow_one=False)


def positive_int(key: str, value: Any) -> int:
    """A whole number >= 1 (a count of epochs)."""
    return checks.integer(key, value, minimum=1)


def epoch_number(key: str, value: Any) -> int:
    """An epoch (0-based): a whole number >= 0."""
    return checks.integer(key, value, minimum=0)


def fraction(key: str, value: Any) -> float:
    """A factor in [0, 1]."""
    return checks.number(key, value, 0.0, 1.0)


@dataclass(frozen=True)
class Schedule:
    """One dropout schedule: `function(epoch, **knobs) -> p` and the checks of its knobs.

    `checks` maps a knob (a parameter of `function` after the epoch) to its check; a knob
    without one is passed as given. The checks travel with the schedule: a new schedule brings
    the checks of its own knobs, nothing else in reglab lists them.
    """

    function: Callable[..., float]
    checks: Mapping[str, Check] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.checks) - set(self.knob_names())
        if unknown:
            raise ValueError(f"checks of knobs the schedule does not take: {sorted(unknown)}")

    def knob_names(self) -> list[str]:
        """The knobs the schedule takes: every argument of its function after the epoch."""
        return list(inspect.signature(self.function).parameters)[1:]

    def required(self) -> list[str]:
        """The knobs without a default."""
        parameters = inspect.signature(self.function).parameters
        return [n for n in self.knob_names() if parameters[n].default is inspect.Parameter.empty]


SCHEDULES: Registry[Schedule] = Registry("dropout schedule")


def schedule(
    name: str, **knob_checks: Check
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register the decorated function as the schedule `name`, its knobs checked by `knob_checks`."""

    def decorate(function: Callable[..., float]) -> Callable[..., float]:
        SCHEDULES.register(name, Schedule(function, knob_checks))
        return function

    return decorate


@schedule("constant", p=dropout_p)
def constant(epoch: int, p: float = 0.5) -> float:
    """p in every epoch."""
    return p


@schedule("linear", p_start=dropout_p, p_end=dropout_p, epochs=positive_int)
def linear(epoch: int, p_start: float = 0.0, p_end: float = 0.5, epochs: int = 10) -> float:
    """p_start at epoch 0, rising (or falling) linearly to p_end at epoch `epochs - 1`, then kept."""
    progress = min(1.0, epoch / max(1, epochs - 1))
    return p_start + progress * (p_end - p_start)


@schedule("step", p=dropout_p, step_size=positive_int, gamma=fraction)
def step(epoch: int, p: float = 0.5, step_size: int = 5, gamma: float = 0.5) -> float:
    """p, multiplied by gamma every `step_size` epochs."""
    return p * gamma ** (epoch // step_size)


@schedule("early", p=dropout_p, switch_epoch=epoch_number)
def early(epoch: int, p: float = 0.5, switch_epoch: int = 5) -> float:
    """Early dropout: p before `switch_epoch`, 0 from it on."""
    return p if epoch < switch_epoch else 0.0


@schedule("late", p=dropout_p, switch_epoch=epoch_number)
def late(epoch: int, p: float = 0.5, switch_epoch: int = 5) -> float:
    """Late dropout: 0 before `switch_epoch`, p from it on."""
    return 0.0 if epoch < switch_epoch else p


def knob_checks() -> dict[str, list[Check]]:
    """Every knob some registered schedule takes, with the checks those schedules give it.

    The YAML carries every schedule's knobs (so a sweep over schedules composes): a knob is
    checked by each schedule that takes it, also when another schedule is picked.
    """
    found: dict[str, list[Check]] = {}
    for name in SCHEDULES.names():
        entry = SCHEDULES.get(name)
        for knob in entry.knob_names():
            check = entry.checks.get(knob)
            known = found.setdefault(knob, [])
            if check is not None and check not in known:
                known.append(check)
    return found


class DropoutSchedule(Control):
    """Sets p of every dropout carrier from the epoch number (see module docstring)."""

    def __init__(
        self, schedule: str = "constant", kinds: list[str] | None = None, **knobs: Any
    ) -> None:
        self.entry = SCHEDULES.get(schedule, "schedule")
        self.function = self.entry.function
        self.schedule = SCHEDULES.canonical(schedule)
        # None: every carrier kind; else the CARRIERS names given (any spelling; one name alone too).
        self.kinds = None
        if kinds is not None:
            kinds = [kinds] if isinstance(kinds, str) else list(kinds)
            for i, kind in enumerate(kinds):
                CARRIERS.get(kind, f"kinds[{i}]")  # an unknown kind: the valid ones are listed
            self.kinds = [CARRIERS.canonical(kind) for kind in kinds]
        # A knob no registered schedule takes is a typo, not a knob for another schedule.
        known = knob_checks()
        for name, value in knobs.items():
            if name not in known:
                raise ConfigError(
                    name, f"no dropout schedule takes it; valid: {', '.join(sorted(known))}"
                )
            for check in known[name]:
                check(name, value)
        self.knobs = {name: knobs[name] for name in self.entry.knob_names() if name in knobs}
        for name in self.entry.required():
            if name not in self.knobs:
                raise ConfigError(name, f"the {self.schedule} schedule needs it")

    def p_at(self, epoch: int) -> float:
        """The dropout probability for `epoch` (0-based)."""
        p = self.function(epoch, **self.knobs)
        # A schedule's formula may leave [0, 1): say which schedule did, at which epoch.
        try:
            return dropout_p("schedule", p)
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
