"""Which way each logged metric improves: `max` (accuracy) or `min` (loss), by its short name.

Whoever logs a metric declares its direction here when its module is imported: a task's metrics
with the task (reglab.tasks), a control's own metrics next to the control (MC dropout's `mc_acc`
in reglab.callbacks.mc_dropout). The monitor and early-stopping checks (reglab.config) and the
report's plots read it; it imports no torch, so both can ask before (or without) training code.

A metric is known by the last part of its logged name: `val/acc` and `test/acc` are `acc`.
"""

from __future__ import annotations

from collections.abc import Mapping

DIRECTIONS = ("max", "min")
_declared: dict[str, str] = {}


def declare(metrics: Mapping[str, str]) -> dict[str, str]:
    """Record `{short name: "max" | "min"}`; returns it (for the declaring code to log by).

    Declaring a name again with the same direction is a no-op (a module imported twice); the
    other direction is refused: two metrics of one name would be ranked opposite ways.
    """
    for name, direction in metrics.items():
        if direction not in DIRECTIONS:
            raise ValueError(f"metric {name!r}: direction must be max or min, got {direction!r}")
        if _declared.get(name, direction) != direction:
            raise ValueError(
                f"metric {name!r} is already declared to improve toward {_declared[name]}"
            )
    _declared.update(metrics)
    return dict(metrics)


def improves_toward(metric: str) -> str | None:
    """`max` or `min` for `metric` (`val/acc` or `acc`), None for a metric nobody declared."""
    return _declared.get(metric.rsplit("/", 1)[-1])


def names() -> list[str]:
    """Every declared short name: those that improve upward first, each kind in declaration order."""
    return [n for d in DIRECTIONS for n, direction in _declared.items() if direction == d]
