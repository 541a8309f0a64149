"""The layer registry: short names -> layer classes, with the shape arguments each can infer.

Adding a layer is one `register_layer(...)` call (or one `@layer(...)` decorator) in the file that
defines or imports it. Names are matched case-insensitively and without underscores, so
`batch_norm1d`, `BatchNorm1d` and `batchnorm1d` are the same entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

Shape = tuple[int, ...]
ShapeInference = Callable[[Shape], dict]


@dataclass(frozen=True)
class LayerEntry:
    """One catalogue entry: the canonical short name, the module class, its shape inference."""

    name: str
    cls: type[nn.Module]
    infer: ShapeInference | None = None

    def parameters(self) -> list[str]:
        """Keyword arguments the module's constructor accepts."""
        params = inspect.signature(self.cls.__init__).parameters
        return [p for p in params if p not in ("self", "device", "dtype", "args", "kwargs")]

    def required(self) -> list[str]:
        """Constructor arguments without a default value."""
        params = inspect.signature(self.cls.__init__).parameters.values()
        return [
            p.name
            for p in params
            if p.name != "self"
            and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]


LAYERS: dict[str, LayerEntry] = {}


def normalize_name(name: str) -> str:
    """Lookup key for a layer name: lower case, underscores and dashes removed."""
    return name.lower().replace("_", "").replace("-", "")


def register_layer(name: str, cls: type[nn.Module], infer: ShapeInference | None = None) -> None:
    """Add `cls` to the catalogue under `name`; `infer` maps an input shape to inferred kwargs."""
    key = normalize_name(name)
    if key in LAYERS:
        raise KeyError(f"layer {name!r} is already registered")
    LAYERS[key] = LayerEntry(name=name, cls=cls, infer=infer)


def layer(name: str, infer: ShapeInference | None = None) -> Callable[[type], type]:
    """Class decorator form of `register_layer`."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        register_layer(name, cls, infer)
        return cls

    return decorate


def layer_names() -> list[str]:
    """Canonical names of every registered layer, sorted."""
    return sorted(entry.name for entry in LAYERS.values())


def activation_names() -> list[str]:
    """Registered activations (torch's activation modules and reglab's own, e.g. swish)."""
    modules = ("torch.nn.modules.activation", "reglab.nn.activations")
    return sorted(e.name for e in LAYERS.values() if e.cls.__module__ in modules)


def norm_names() -> list[str]:
    """Registered normalization layers."""
    return sorted(e.name for e in LAYERS.values() if "norm" in e.name)


def get_layer(name: str) -> LayerEntry | None:
    """The entry registered under `name` (any spelling), or None."""
    return LAYERS.get(normalize_name(name))
