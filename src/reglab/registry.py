"""One registry pattern for every extension point: short names -> entries.

Layers, penalty kinds, dropout schedules, augmentation ops, Optuna samplers and pruners are each
one `Registry`. An entry is added next to its definition with the decorator form
(`@PENALTIES.register("l1")`) or a call (`LAYERS.register("relu", entry)`), in any file; looking
a name up either returns the entry or raises a ConfigError that lists the valid names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from reglab.errors import ConfigError

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """Lookup key of a name: lower case, underscores and dashes removed (`batch_norm1d` = `BatchNorm1d`)."""
    return name.lower().replace("_", "").replace("-", "")


class Registry(Generic[T]):
    """Named entries of one kind (`what` is used in messages: "penalty kind", "layer", ...)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, tuple[str, T]] = {}

    def register(self, name: str, entry: T | None = None) -> Any:
        """Add `entry` under `name`; without `entry`, a decorator that registers what it decorates.

        Registering the same object twice under a name is a no-op (a module imported twice);
        another object under a taken name is an error.
        """
        if entry is None:

            def decorate(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorate
        key = normalize_name(name)
        if key in self._entries and self._entries[key][1] is not entry:
            raise KeyError(f"{self.what} {name!r} is already registered")
        self._entries[key] = (name, entry)
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (tests that register toy entries clean up with this)."""
        self._entries.pop(normalize_name(name), None)

    def find(self, name: str) -> T | None:
        """The entry under `name` (any spelling), or None."""
        found = self._entries.get(normalize_name(name)) if isinstance(name, str) else None
        return found[1] if found else None

    def get(self, name: Any, key: str = "") -> T:
        """The entry under `name`; a ConfigError on `key` listing the valid names otherwise."""
        entry = self.find(name)
        if entry is None:
            raise ConfigError(
                key, f"unknown {self.what} {name!r}; valid: {', '.join(self.names())}"
            )
        return entry

    def canonical(self, name: str) -> str:
        """The name an entry was registered under (`BatchNorm1d` -> `batch_norm1d`)."""
        return self._entries[normalize_name(name)][0]

    def names(self, where: Callable[[T], bool] | None = None) -> list[str]:
        """Registered names, sorted; only those whose entry satisfies `where` if given."""
        return sorted(n for n, e in self._entries.values() if where is None or where(e))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize_name(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
