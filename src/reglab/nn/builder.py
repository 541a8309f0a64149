"""Turn a model spec (a list of layers and repeated blocks) into a named `nn.Sequential`.

A spec entry is one of:
  relu                                  a layer by name, default arguments
  {linear: {out_features: 64}}          a layer with keyword arguments
  {repeat: 3, block: [...]}             a block of entries, repeated (each copy is a sub-Sequential)
  none / null                           nothing (lets a knob such as `norm: none` drop a layer)
Shape arguments (in_features, in_channels, num_features, ...) are inferred by a dry forward pass;
a final Linear head with the data's number of outputs is appended unless `head: false`.

Errors are ConfigErrors keyed relative to the model node (`layers[2].linear.p`, `activation`,
`head`); the config layer, which knows the node sits at `model`, adds that prefix.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from reglab import checks
from reglab.errors import ConfigError
from reglab.names import SKIP, check_knobs
from reglab.nn.init import init_weights
from reglab.nn.registry import LAYERS, LayerEntry, Shape


def build_net(spec: dict, input_shape: Sequence[int], num_outputs: int) -> nn.Sequential:
    """Build the net described by `spec` for inputs of `input_shape` (no batch dim)."""
    # Keys other than layers/init/head are knobs (width, depth, ...) used through interpolation.
    check_knobs(spec)
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("layers", "must be a non-empty list of layers")
    builder = _Builder(tuple(int(d) for d in input_shape))
    modules = builder.build_list(layers, "layers")
    if not checks.boolean("head", spec.get("head", True)):
        if builder.shape != (num_outputs,):
            raise ConfigError(
                "head",
                f"false, but the net's output has shape {builder.shape} where the data needs "
                f"({num_outputs},): end `layers` with a linear of out_features {num_outputs}, "
                "or set head: true",
            )
    else:
        if len(builder.shape) != 1:
            raise ConfigError(
                "layers",
                f"the body's output has shape {builder.shape}; end it with `flatten` or "
                "pooling so that the Linear head gets (N, features)",
            )
        modules.append(("head", builder.make("linear", {"out_features": num_outputs}, "head")))
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
        for extra in sorted(set(entry) - {"repeat", "block"}, key=str):
            checks.choice(key, extra, ["repeat", "block"])
        times = checks.integer(f"{key}.repeat", entry["repeat"], minimum=0)
        block = entry.get("block")
        if not isinstance(block, list) or not block:
            raise ConfigError(f"{key}.block", "must be a non-empty list of layers")
        return [
            ("block", nn.Sequential(OrderedDict(self.build_list(block, f"{key}.block"))))
            for _ in range(times)
        ]

    def make(self, name: str, kwargs: dict, key: str) -> nn.Module:
        entry = LAYERS.get(name, key)
        module = _construct(entry, kwargs, self.shape, key)
        self.shape = _dry_forward(module, self.shape, entry.name, key)
        return module


def _parse_entry(entry: object, key: str) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, kwargs),) = entry.items()
        return str(name), checks.mapping(f"{key}.{name}", kwargs)
    raise ConfigError(
        key,
        f"expected a layer name, {{name: {{kwargs}}}} or {{repeat: N, block: [...]}}, got {entry!r}",
    )


def _construct(entry: LayerEntry, kwargs: dict, shape: Shape, key: str) -> nn.Module:
    checks.arguments(f"{key}.{entry.name}", entry.cls, kwargs)
    inferred = entry.infer(shape) if entry.infer else {}
    arguments = {**inferred, **kwargs}
    for size in ("out_features", "out_channels"):  # torch builds empty layers from 0
        if size in arguments:
            checks.integer(f"{key}.{entry.name}.{size}", arguments[size], minimum=1)
    if entry.kind == "dropout" and "p" in arguments:
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
    return LAYERS.canonical(name) if name in LAYERS else name
