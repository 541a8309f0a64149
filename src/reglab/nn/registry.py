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
an input shape (without the batch dimension) to the constructor arguments it determines; an infer
function that also names `vocab_size` or `dtype` as keyword parameters gets the data's vocabulary
size and the tracked input dtype (the embedding reads `num_embeddings` that way):

    register_layer("my_embedding", MyEmbedding, kind="embedding", inputs="integer",
                   infer=lambda shape, *, vocab_size: {"vocab": vocab_size})

What a layer takes is declared too, so that a misplaced layer is a one-line error naming the spec
entry: `inputs` is "float" (the default), "integer" (token ids: the embedding) or "any" (flatten,
identity); `ndim` is the number of input dimensions without the batch one it needs (2 for the
sequence layers: (T, F)), None for any. Names are matched case-insensitively and without
underscores: `batch_norm1d`, `BatchNorm1d` and `batchnorm1d` are one entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from reglab import checks
from reglab.registry import Registry

Shape = tuple[int, ...]
# infer(shape) -> kwargs; it may also take the keyword parameters `vocab_size` and `dtype`.
ShapeInference = Callable[..., dict]

# What a layer is, as far as the builder and the model knobs care; "other" for anything else
# (flatten, identity, custom blocks).
LAYER_KINDS = (
    "linear", "conv", "pool", "norm", "dropout", "activation", "embedding", "recurrent",
    "attention", "upsample", "other",
)  # fmt: skip
# The input dtypes a layer may declare it takes.
LAYER_INPUTS = ("float", "integer", "any")


@dataclass(frozen=True)
class LayerEntry:
    """One catalogue entry: the canonical short name, the module class, its shape inference, its kind."""

    name: str
    cls: type[nn.Module]
    infer: ShapeInference | None = None
    kind: str = "other"
    inputs: str = "float"
    ndim: int | None = None

    def inferred(self, shape: Shape, **context: object) -> dict:
        """The constructor arguments `infer` reads off the input (the context keys it names)."""
        if self.infer is None:
            return {}
        wanted = inspect.signature(self.infer).parameters
        return self.infer(shape, **{k: v for k, v in context.items() if k in wanted})

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
    name: str,
    cls: type[nn.Module],
    infer: ShapeInference | None = None,
    kind: str = "other",
    *,
    inputs: str = "float",
    ndim: int | None = None,
) -> LayerEntry:
    """Add `cls` to the catalogue under `name` as a layer of `kind` (one of LAYER_KINDS), taking
    `inputs` (one of LAYER_INPUTS) with `ndim` dimensions besides the batch (None: any).

    Registering the same entry again is a no-op (a module imported twice); another layer under a
    taken name (in any spelling) is a KeyError.
    """
    checks.choice("kind", kind, LAYER_KINDS)
    checks.choice("inputs", inputs, LAYER_INPUTS)
    if ndim is not None:
        checks.integer("ndim", ndim, minimum=1)
    entry = LayerEntry(name=name, cls=cls, infer=infer, kind=kind, inputs=inputs, ndim=ndim)
    existing = LAYERS.find(name)
    if existing is not None and existing == entry:
        return existing
    return LAYERS.register(name, entry)


def layer(
    name: str,
    infer: ShapeInference | None = None,
    kind: str = "other",
    *,
    inputs: str = "float",
    ndim: int | None = None,
) -> Callable[[type], type]:
    """Class decorator form of `register_layer`."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        register_layer(name, cls, infer, kind, inputs=inputs, ndim=ndim)
        return cls

    return decorate


def layer_names(kind: str | None = None) -> list[str]:
    """Canonical names of the registered layers (only those of `kind` if given), sorted."""
    return LAYERS.names(where=None if kind is None else lambda entry: entry.kind == kind)


def get_layer(name: str) -> LayerEntry | None:
    """The entry registered under `name` (any spelling), or None."""
    return LAYERS.find(name)
