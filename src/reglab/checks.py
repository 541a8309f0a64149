"""Validators for config values: each raises a ConfigError naming the key and the allowed range."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from reglab.errors import ConfigError


def number(
    key: str, value: Any, low: float = -math.inf, high: float = math.inf, *, high_open: bool = False
) -> float:
    """`value` as a float in [low, high] (or [low, high) with `high_open`)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    above = is_number and (value >= high if high_open else value > high)
    if not is_number or value < low or above:
        bracket = ")" if high_open else "]"
        raise ConfigError(key, f"must be a number in [{low:g}, {high:g}{bracket}, got {value!r}")
    return float(value)


def probability(key: str, value: Any, *, allow_one: bool = True) -> float:
    """A probability in [0, 1] (or [0, 1) when `allow_one` is false, as for dropout's p)."""
    return number(key, value, 0.0, 1.0, high_open=not allow_one)


def integer(key: str, value: Any, minimum: int = 0) -> int:
    """An integer >= minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def choice(key: str, value: Any, valid: Sequence[str]) -> str:
    """One of `valid`."""
    if value not in valid:
        raise ConfigError(key, f"unknown value {value!r}; valid: {', '.join(valid)}")
    return value
