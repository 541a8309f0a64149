"""The layer registry: short names -> layer classes, each with its kind and inferable shape arguments.

A layer class defined in any file (a project module, a notebook, a test) joins the catalogue with
one call, and can then be named in a model spec or as a model knob (`model.activation=square`):

    from reglab.nn import layer, register_layer

    @layer("square", kind="activation")
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    register_layer("my_linear", MyLinear, infer=lambda shape: {"in_features": shape[-1]}, kind="linear")

The kind is declared, never guessed: it says which knob a layer may fill (`activation` takes only
kind "activation", `norm` only kind "norm") and which checks apply (dropout's p < 1). `infer` maps
an input shape (without the batch dimension) to the constructor arguments it determines. Names are
matched case-insensitively and without underscores: `batch_norm1d`, `BatchNorm1d` and `batchnorm1d`
are one entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from reglab import checks
from reglab.registry import Registry

Shape = tuple[int, ...]
ShapeInference = Callable[[Shape], dict]

# What a layer is, as far as the builder and the model knobs care; "other" for anything else
# (flatten, identity, custom blocks).
LAYER_KINDS = ("linear", "conv", "pool", "norm", "dropout", "activation", "other")


@dataclass(frozen=True)
class LayerEntry:
    """One catalogue entry: the canonical short name, the module class, its shape inference, its kind."""

    name: str
    cls: type[nn.Module]
    infer: ShapeInference | None = None
    kind: str = "other"

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


LAYERS: Registry[LayerEntry] = Registry("layer")


def register_layer(
    name: str, cls: type[nn.Module], infer: ShapeInference | None = None, kind: str = "other"
) -> LayerEntry:
    """Add `cls` to the catalogue under `name` as a layer of `kind` (one of LAYER_KINDS).

    Registering the same entry again is a no-op (a module imported twice); another layer under a
    taken name (in any spelling) is a KeyError.
    """
    checks.choice("kind", kind, LAYER_KINDS)
    entry = LayerEntry(name=name, cls=cls, infer=infer, kind=kind)
    existing = LAYERS.find(name)
    if existing is not None and existing == entry:
        return existing
    return LAYERS.register(name, entry)


def layer(
    name: str, infer: ShapeInference | None = None, kind: str = "other"
) -> Callable[[type], type]:
    """Class decorator form of `register_layer`."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        register_layer(name, cls, infer, kind)
        return cls

    return decorate


def layer_names(kind: str | None = None) -> list[str]:
    """Canonical names of the registered layers (only those of `kind` if given), sorted."""
    return LAYERS.names(where=None if kind is None else lambda entry: entry.kind == kind)


def get_layer(name: str) -> LayerEntry | None:
    """The entry registered under `name` (any spelling), or None."""
    return LAYERS.find(name)
