"""Structural keywords of a model spec: entries that build modules out of nested entries.

`{repeat: 3, block: [...]}`, `{residual: [...], drop_path: 0.1}`, the pre-activation unit
`{preact_residual: [...], pre: [batch_norm2d, relu], drop_path: 0.1}` and the stage of a ResNet
`{stage: 2, stride: 2, block: [...]}` are entries of the registry `STRUCTURES`, as layers are
entries of `LAYERS`: the builder (reglab.nn.builder) knows no keyword
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

import inspect
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from reglab import checks
from reglab.errors import ConfigError
from reglab.names import SKIP
from reglab.nn.registry import LAYERS, Shape
from reglab.nn.residual import PreActResidual, Residual, projection
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


@structure(
    "preact_residual",
    other_keys=("pre", "drop_path"),
    form="{preact_residual: [...], pre: [...]}",
)
def preact_residual(builder: SpecBuilder, entry: dict, key: str) -> Built:
    """He et al. 2016's pre-activation unit: x (or a projection of pre(x)) + block(pre(x)).

    The skip is x when the branch keeps the input's shape; else a 1x1 convolution of the
    pre-activated input, strided when the branch shrinks the spatial size (reglab.nn.residual).
    """
    pre = _block(entry, "pre", key)
    layers = _block(entry, "preact_residual", key)
    drop_path = entry.get("drop_path")
    if drop_path is not None:
        checks.probability(f"{key}.drop_path", drop_path, allow_one=False)
    in_shape = builder.shape
    pre_module = nn.Sequential(OrderedDict(builder.build_list(pre, f"{key}.pre")))
    activated = builder.shape
    block_key = f"{key}.preact_residual"
    block = nn.Sequential(OrderedDict(builder.build_list(layers, block_key)))
    try:
        shortcut = (
            None
            if builder.shape == in_shape
            else projection(activated, builder.shape, strided=True)
        )
    except ConfigError as error:
        raise error.under(block_key) from None
    return [("preact_residual", PreActResidual(pre_module, block, shortcut, drop_path))]


@structure("stage", other_keys=("stride", "block"), form="{stage: N, stride: S, block: [...]}")
def stage(builder: SpecBuilder, entry: dict, key: str) -> Built:
    """A ResNet stage: `block` built `stage` times, the first copy striding by `stride`.

    In the first copy, the first layer (in spec order, nested entries included) that takes a
    `stride` argument (a convolution or pooling layer) gets the stage's stride, as torchvision's
    `_make_layer` strides a block's first convolution; the later copies are built as written.
    The copies are one Sequential (`stage.block_1`, `stage.block_2`, ...).
    """
    times = checks.integer(f"{key}.stage", entry["stage"], minimum=1)
    stride = checks.integer(f"{key}.stride", entry.get("stride", 1), minimum=1)
    block = _block(entry, "block", key)
    first = block
    if stride != 1:
        first, found = _with_stride(block, stride, f"{key}.block")
        if not found:
            raise ConfigError(
                f"{key}.stride",
                f"{stride}, but no layer of the block takes a stride (a convolution or pooling)",
            )
    copies = [
        (f"block_{index + 1}", nn.Sequential(OrderedDict(builder.build_list(spec, f"{key}.block"))))
        for index, spec in enumerate([first, *[block] * (times - 1)])
    ]
    return [("stage", nn.Sequential(OrderedDict(copies)))]


def _with_stride(entries: list, stride: int, key: str) -> tuple[list, bool]:
    """A copy of `entries` whose first layer taking a `stride` argument has `stride`; whether one
    did. Nested structures are searched in the order of their keys (the keyword's list first)."""
    strided: list = []
    done = False
    for index, entry in enumerate(entries):
        entry_key = f"{key}[{index}]"
        found = None if done or entry in SKIP else structure_of(entry)
        if found is not None:
            entry = dict(entry)
            for name in found.keys:
                if not done and isinstance(entry.get(name), list):
                    entry[name], done = _with_stride(entry[name], stride, f"{entry_key}.{name}")
        elif not done and entry not in SKIP:
            entry, done = _layer_with_stride(entry, stride, entry_key)
        strided.append(entry)
    return strided, done


def _layer_with_stride(entry: object, stride: int, key: str) -> tuple[object, bool]:
    """The layer entry with `stride` written in, if its layer takes one; a malformed entry is
    left as it is, for the builder to refuse."""
    if isinstance(entry, str):
        name, kwargs = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        ((name, kwargs),) = entry.items()
        kwargs = {} if kwargs is None else kwargs
    else:
        return entry, False
    layer = LAYERS.find(name)
    if layer is None or not isinstance(kwargs, dict):
        return entry, False
    if "stride" not in inspect.signature(layer.cls).parameters:
        return entry, False
    if "stride" in kwargs:
        raise ConfigError(
            f"{key}.{name}.stride",
            "the stage's `stride` sets the stride of its first block's first strided layer: "
            "leave it out here",
        )
    return {name: {**kwargs, "stride": stride}}, True
