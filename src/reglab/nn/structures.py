"""Structural keywords of a model spec: entries that build modules out of nested entries.

`{repeat: 3, block: [...]}` and `{residual: [...], drop_path: 0.1}` are entries of the registry
`STRUCTURES`, as layers are entries of `LAYERS`: the builder (reglab.nn.builder) knows no keyword
by name. A spec entry that is a mapping holding a registered keyword is built by that entry's
`build(builder, entry, key)`, which returns (name, module) pairs; the builder has already refused
keys other than the entry's `keys` (one line naming the spec entry). A new keyword is one entry:

    @structure("parallel", other_keys=("merge",), form="{parallel: [[...], [...]]}")
    def parallel(builder, entry, key):
        ...  # builder.build_list(layers, f"{key}.parallel") builds nested entries; builder.shape
        return [("parallel", module)]  # is the tracked output shape, to leave at the module's

Nothing here changes training: a spec builds the same net whichever file its keywords live in.
Driven by the `model` config group (`model.layers`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from reglab import checks
from reglab.errors import ConfigError
from reglab.nn.registry import Shape
from reglab.nn.residual import Residual, projection
from reglab.registry import Registry

Built = list[tuple[str, nn.Module]]


class SpecBuilder(Protocol):
    """What a structural keyword may use of the builder: nested entries and the tracked shape."""

    shape: Shape

    def build_list(self, entries: list, key: str) -> Built:
        """The (name, module) pairs of spec `entries` at spec path `key`, tracking the shape."""
        ...


@dataclass(frozen=True)
class Structure:
    """One structural keyword: the keys its entry may hold (the keyword first), how messages show
    it, and the function that builds its modules."""

    keys: tuple[str, ...]
    form: str
    build: Callable[[SpecBuilder, dict, str], Built]


STRUCTURES: Registry[Structure] = Registry("structural keyword")


BuildFunction = Callable[[SpecBuilder, dict, str], Built]


def structure(
    name: str, *, other_keys: tuple[str, ...] = (), form: str
) -> Callable[[BuildFunction], BuildFunction]:
    """Register the decorated build function as the structural keyword `name`, whose entries may
    also hold `other_keys`."""

    def decorate(build: BuildFunction) -> BuildFunction:
        STRUCTURES.register(name, Structure((name, *other_keys), form, build))
        return build

    return decorate


def structure_of(entry: object) -> Structure | None:
    """The structure a spec entry names (a mapping holding a registered keyword), or None.

    Keywords are looked up exactly as registered, in name order: an entry holding two keywords
    is built by the first and refused for the other key.
    """
    if not isinstance(entry, dict):
        return None
    for name in STRUCTURES.names():
        if name in entry:
            return STRUCTURES.get(name)
    return None


def build_structure(builder: SpecBuilder, found: Structure, entry: dict, key: str) -> Built:
    """`found`'s modules for `entry` at spec path `key`, after refusing keys it does not take."""
    for extra in sorted(set(entry) - set(found.keys), key=str):
        checks.choice(key, extra, list(found.keys))
    return found.build(builder, entry, key)


def forms() -> list[str]:
    """How messages show each structural keyword, in name order."""
    return [STRUCTURES.get(name).form for name in STRUCTURES.names()]


def _block(entry: dict, name: str, key: str) -> list:
    layers = entry.get(name)
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{key}.{name}", "must be a non-empty list of layers")
    return layers


@structure("repeat", other_keys=("block",), form="{repeat: N, block: [...]}")
def repeat(builder: SpecBuilder, entry: dict, key: str) -> Built:
    """`block` built `repeat` times, each copy its own sub-Sequential (no shared weights)."""
    times = checks.integer(f"{key}.repeat", entry["repeat"], minimum=0)
    block = _block(entry, "block", key)
    return [
        ("block", nn.Sequential(OrderedDict(builder.build_list(block, f"{key}.block"))))
        for _ in range(times)
    ]


@structure("residual", other_keys=("drop_path",), form="{residual: [...]}")
def residual(builder: SpecBuilder, entry: dict, key: str) -> Built:
    """x + block(x), x projected when the block changes its width (reglab.nn.residual)."""
    block_key = f"{key}.residual"
    layers = _block(entry, "residual", key)
    drop_path = entry.get("drop_path")
    if drop_path is not None:
        checks.probability(f"{key}.drop_path", drop_path, allow_one=False)
    in_shape = builder.shape
    block = nn.Sequential(OrderedDict(builder.build_list(layers, block_key)))
    try:
        shortcut = projection(in_shape, builder.shape)
    except ConfigError as error:
        raise error.under(block_key) from None
    return [("residual", Residual(block, shortcut, drop_path))]
