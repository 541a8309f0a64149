"""Validators for config values: each raises a ConfigError naming the key and the allowed range."""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from reglab.errors import ConfigError

SEED_MAX = 2**32 - 1  # NumPy's seed range (seed_everything and scikit-learn seed NumPy too)


def number(
    key: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a finite float in [low, high]; `low_open` / `high_open` exclude the bounds."""
    # NaN and infinities are refused too: no comparison catches NaN, and no knob means infinity.
    is_number = (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )
    below = is_number and (value <= low if low_open else value < low)
    above = is_number and (value >= high if high_open else value > high)
    if not is_number or below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(key, f"must be a number in {interval}, got {value!r}")
    return float(value)


def probability(key: str, value: Any, *, allow_one: bool = True) -> float:
    """A probability in [0, 1] (or [0, 1) when `allow_one` is false, as for dropout's p)."""
    return number(key, value, 0.0, 1.0, high_open=not allow_one)


def integer(key: str, value: Any, minimum: int | None = 0, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum] (None: unbounded on that side)."""
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    low = is_integer and minimum is not None and value < minimum
    high = is_integer and maximum is not None and value > maximum
    if not is_integer or low or high:
        if minimum is not None and maximum is not None:
            bound = f" in [{minimum}, {maximum}]"
        elif minimum is not None:
            bound = f" >= {minimum}"
        else:
            bound = f" <= {maximum}" if maximum is not None else ""
        raise ConfigError(key, f"must be an integer{bound}, got {value!r}")
    return value


def boolean(key: str, value: Any) -> bool:
    """A true/false switch: a string such as 'abc' or 'no' would silently count as true."""
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def seed(key: str, value: Any) -> int:
    """A random seed NumPy, scikit-learn and torch all take: an integer in [0, 2**32 - 1]."""
    return integer(key, value, 0, SEED_MAX)


def batches(key: str, value: Any) -> int | float:
    """A share of the batches as Lightning reads it: a fraction in (0, 1] or a count >= 1."""
    if isinstance(value, float) and not isinstance(value, bool):
        return number(key, value, 0.0, 1.0, low_open=True)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(
        key, f"must be a fraction in (0, 1] or a number of batches >= 1, got {value!r}"
    )


def choice(key: str, value: Any, valid: Sequence[str]) -> str:
    """One of `valid`."""
    if value not in valid:
        raise ConfigError(key, f"unknown value {value!r}; valid: {', '.join(valid)}")
    return value


def closest(name: str, candidates: Any, parent: str = "") -> str:
    """`; did you mean <parent>.<closest>?` for a candidate close to `name` (difflib's ratio >=
    0.6), else `; valid: <every candidate>` (or that `parent` is empty).

    For a message about a misspelled key: `trainer.max_epoch: no such key; did you mean
    trainer.max_epochs?`.
    """
    names = sorted(map(str, candidates))
    close = difflib.get_close_matches(str(name), names, n=1)
    prefix = f"{parent}." if parent else ""
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    if names:
        return f"; valid: {', '.join(names)}"
    return f"; {parent} is empty in this option: choose one that sets it ({parent}=<option>)"


def mapping(key: str, value: Any) -> dict:
    """A mapping (or null, read as empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping, got {value!r}")
    return dict(value)


def arguments(key: str, function: Callable, given: Mapping[str, Any]) -> dict:
    """`given` as keyword arguments of `function`; a key it does not take is an error."""
    accepted = signature_names(function)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(
            key,
            f"does not take {', '.join(map(repr, unknown))}; valid: {', '.join(accepted) or '(none)'}",
        )
    return dict(given)


def signature_names(function: Callable) -> list[str]:
    """Keyword arguments `function` (or a class's constructor) accepts, in order."""
    target = function.__init__ if isinstance(function, type) else function
    skip = ("self", "args", "kwargs", "device", "dtype")
    return [name for name in inspect.signature(target).parameters if name not in skip]


_FOLDER_NAME = re.compile(r"[\w.-]+")


def folder_name(key: str, value: Any, names: str = "the run folder under outputs/") -> str:
    """A plain folder-name piece (letters, digits, `-`, `_`, `.`; not `.` or `..`): no path escapes.

    `names`: what the folder is, for the message."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not _FOLDER_NAME.fullmatch(text) or text in (".", ".."):
        raise ConfigError(
            key,
            f"must be a plain folder name (letters, digits, '-', '_', '.'), got {value!r}: "
            f"it names {names}",
        )
    return text
