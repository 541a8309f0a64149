"""Turn a model spec (a list of layers and repeated blocks) into a named `nn.Sequential`.

A spec entry is one of:
  relu                                  a layer by name, default arguments
  {linear: {out_features: 64}}          a layer with keyword arguments
  {repeat: 3, block: [...]}             a block of entries, repeated (each copy is a sub-Sequential)
  none / null                           nothing (lets a knob such as `norm: none` drop a layer)
Shape arguments (in_features, in_channels, num_features, ...) are inferred by a dry forward pass;
a final Linear head with the data's number of outputs is appended unless `head: false`.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from reglab import checks
from reglab.errors import ConfigError
from reglab.nn.init import init_weights
from reglab.nn.registry import (
    LayerEntry,
    Shape,
    activation_names,
    get_layer,
    layer_names,
    norm_names,
)

SKIP = (None, "none", "null")


def check_knobs(spec: dict) -> None:
    """A model's `activation` / `norm` knob must name a registered activation / norm (or none)."""
    for knob, valid in (("activation", activation_names()), ("norm", norm_names())):
        value = spec.get(knob, "none")
        # A knob may carry arguments, as any spec entry: {swish: {learnable: true}}.
        name = next(iter(value), None) if isinstance(value, dict) and len(value) == 1 else value
        entry = get_layer(name) if isinstance(name, str) else None
        if value not in SKIP and (entry is None or entry.name not in valid):
            allowed = valid + (["none"] if knob == "norm" else [])
            raise ConfigError(f"model.{knob}", f"got {value!r}; valid: {', '.join(allowed)}")
    if "dropout" in spec:
        checks.probability("model.dropout", spec["dropout"], allow_one=False)
    if "width" in spec:
        checks.integer("model.width", spec["width"], minimum=1)
    if "depth" in spec:
        checks.integer("model.depth", spec["depth"], minimum=0)


def build_net(spec: dict, input_shape: Sequence[int], num_outputs: int) -> nn.Sequential:
    """Build the net described by `spec` for inputs of `input_shape` (no batch dim)."""
    # Keys other than layers/init/head are knobs (width, depth, ...) used through interpolation.
    check_knobs(spec)
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("model.layers", "must be a non-empty list of layers")
    builder = _Builder(tuple(int(d) for d in input_shape))
    modules = builder.build_list(layers, "model.layers")
    if spec.get("head", True):
        if len(builder.shape) != 1:
            raise ConfigError(
                "model.layers",
                f"the body's output has shape {builder.shape}; end it with `flatten` or "
                "pooling so that the Linear head gets (N, features)",
            )
        modules.append(
            ("head", builder.make("linear", {"out_features": num_outputs}, "model.head"))
        )
    net = nn.Sequential(OrderedDict(modules))
    init_weights(net, spec.get("init", "default"))
    return net


class _Builder:
    """Builds modules one at a time, tracking the output shape with a dry forward pass."""

    def __init__(self, input_shape: Shape) -> None:
        self.shape = input_shape

    def build_list(self, entries: list, key: str) -> list[tuple[str, nn.Module]]:
        built: list[tuple[str, nn.Module]] = []
        for index, entry in enumerate(entries):
            entry_key = f"{key}[{index}]"
            if entry in SKIP:
                continue
            if isinstance(entry, dict) and "repeat" in entry:
                built.extend(self.build_repeat(entry, entry_key))
                continue
            name, kwargs = _parse_entry(entry, entry_key)
            built.append((name, self.make(name, kwargs, entry_key)))
        return _readable_names(built)

    def build_repeat(self, entry: dict, key: str) -> list[tuple[str, nn.Module]]:
        extra = set(entry) - {"repeat", "block"}
        if extra:
            raise ConfigError(key, f"unknown key(s) {sorted(extra)}; a repeat takes: repeat, block")
        times, block = entry["repeat"], entry.get("block")
        if not isinstance(times, int) or isinstance(times, bool) or times < 0:
            raise ConfigError(f"{key}.repeat", f"must be a non-negative integer, got {times!r}")
        if not isinstance(block, list) or not block:
            raise ConfigError(f"{key}.block", "must be a non-empty list of layers")
        return [
            ("block", nn.Sequential(OrderedDict(self.build_list(block, f"{key}.block"))))
            for _ in range(times)
        ]

    def make(self, name: str, kwargs: dict, key: str) -> nn.Module:
        entry = get_layer(name)
        if entry is None:
            raise ConfigError(
                key, f"unknown layer {name!r}; valid layers: {', '.join(layer_names())}"
            )
        module = _construct(entry, kwargs, self.shape, key)
        self.shape = _dry_forward(module, self.shape, entry.name, key)
        return module


def _parse_entry(entry: object, key: str) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, kwargs),) = entry.items()
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{key}.{name}", f"arguments must be a mapping, got {kwargs!r}")
        return str(name), dict(kwargs)
    raise ConfigError(
        key,
        f"expected a layer name, {{name: {{kwargs}}}} or {{repeat: N, block: [...]}}, got {entry!r}",
    )


def _construct(entry: LayerEntry, kwargs: dict, shape: Shape, key: str) -> nn.Module:
    valid = entry.parameters()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"{key}.{entry.name}",
            f"{entry.name} does not take {', '.join(map(repr, unknown))}; "
            f"valid arguments: {', '.join(valid) or '(none)'}",
        )
    inferred = entry.infer(shape) if entry.infer else {}
    arguments = {**inferred, **kwargs}
    for size in ("out_features", "out_channels"):  # torch builds empty layers from 0
        if size in arguments:
            checks.integer(f"{key}.{entry.name}.{size}", arguments[size], minimum=1)
    if issubclass(entry.cls, _DropoutNd) and "p" in arguments:
        # torch accepts p = 1 (a layer that zeroes everything); as a regularizer it is a mistake.
        checks.probability(f"{key}.{entry.name}.p", arguments["p"], allow_one=False)
    missing = [p for p in entry.required() if p not in arguments]
    if missing:
        raise ConfigError(
            f"{key}.{entry.name}", f"missing required argument(s): {', '.join(missing)}"
        )
    try:
        return entry.cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}.{entry.name}", f"bad arguments {arguments}: {error}") from None


def _dry_forward(module: nn.Module, shape: Shape, name: str, key: str) -> Shape:
    # Eval mode: BatchNorm must not move its running statistics on dummy data.
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.randn(2, *shape))
    except Exception as error:  # noqa: BLE001 - any failure here is a spec/shape mismatch
        raise ConfigError(key, f"{name} cannot take inputs of shape {shape}: {error}") from None
    finally:
        module.train()
    return tuple(out.shape[1:])


def _readable_names(built: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Name each module by its short name, numbering (`_1`, `_2`) names that occur more than once.

    The underscore keeps numbered names apart from registered ones: six `relu` are relu_1..relu_6,
    which cannot collide with a `relu6` layer.
    """
    totals = Counter(_short(name) for name, _ in built)
    seen: Counter = Counter()
    named = []
    for name, module in built:
        short = _short(name)
        seen[short] += 1
        named.append((f"{short}_{seen[short]}" if totals[short] > 1 else short, module))
    return named


def _short(name: str) -> str:
    entry = get_layer(name)
    return entry.name if entry else name
