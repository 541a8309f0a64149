"""Turn a model spec (a list of layers, repeated and residual blocks) into a named `nn.Sequential`.

A spec entry is one of:
  relu                                  a layer by name, default arguments
  {linear: {out_features: 64}}          a layer with keyword arguments
  {repeat: 3, block: [...]}             a block of entries, repeated (each copy is a sub-Sequential)
  {residual: [...], drop_path: 0.1}     a block whose input is added to its output (reglab.nn.residual);
                                        drop_path (optional) is stochastic depth on the block
The last two are structural keywords, entries of reglab.nn.structures.STRUCTURES (one registry
entry each, as layers are entries of LAYERS); the builder knows none of them by name. Two more
build the standard CIFAR nets (conf/model/preact_resnet18.yaml, wide_resnet.yaml):
  {preact_residual: [...], pre: [...]}  a pre-activation unit (He et al. 2016)
  {stage: N, stride: S, block: [...]}   N copies of a block, the first one striding by S
  none / null                           nothing (lets a knob such as `norm: none` drop a layer)
Shape arguments (in_features, in_channels, num_features, input_size, d_model, num_embeddings, ...)
are inferred by a dry forward pass that tracks the shape and the dtype: integer token inputs flow
until an `embedding` turns them into vectors. A final Linear head with the data's number of outputs
is appended unless `head: false`.

Before anything is allocated, the net is built once on the meta device (shapes, no memory): a
net whose weights and gradients would not fit in the memory available is refused with both sizes,
instead of failing in the allocator (`model.width=2000000000`).

Errors are ConfigErrors keyed relative to the model node (`layers[2].linear.p`, `activation`,
`head`); the config layer, which knows the node sits at `model`, adds that prefix.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from reglab import checks
from reglab.errors import ConfigError, first_line
from reglab.names import SKIP, check_knobs
from reglab.nn.init import init_weights
from reglab.nn.registry import LAYERS, LayerEntry, Shape
from reglab.nn.structures import build_structure, forms, structure_of


def build_net(
    spec: dict,
    input_shape: Sequence[int],
    num_outputs: int,
    *,
    input_dtype: torch.dtype = torch.float32,
    vocab_size: int | None = None,
    output_shape: Sequence[int] | None = None,
) -> nn.Sequential:
    """Build the net described by `spec` for inputs of `input_shape` (no batch dim) and `input_dtype`.

    Integer inputs are token ids in [0, vocab_size). With `head: false` the body's output must
    have `output_shape` (no batch dim; default `(num_outputs,)`); with the Linear head the data's
    outputs must be a vector.
    """
    # Keys other than layers/init/head are knobs (width, depth, ...) used through interpolation.
    check_knobs(spec)
    layers = spec.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError("layers", "must be a non-empty list of layers")
    wanted = (num_outputs,) if output_shape is None else tuple(int(d) for d in output_shape)

    def assemble() -> nn.Sequential:
        builder = _Builder(tuple(int(d) for d in input_shape), input_dtype, vocab_size)
        return _assemble(spec, builder, builder.build_list(layers, "layers"), wanted, num_outputs)

    check_memory(spec, assemble)
    net = assemble()
    init_weights(net, spec.get("init", "default"))
    return net


def _assemble(
    spec: dict,
    builder: _Builder,
    modules: list[tuple[str, nn.Module]],
    wanted: tuple[int, ...],
    num_outputs: int,
) -> nn.Sequential:
    """The body `modules` and, unless `head: false`, a Linear head, checked against `wanted`."""
    if not checks.boolean("head", spec.get("head", True)):
        if builder.shape != wanted:
            raise ConfigError(
                "head",
                f"false, but the net's output has shape {builder.shape} where the data needs "
                f"{wanted}: {_ending(wanted)}, or set head: true",
            )
    else:
        if len(wanted) != 1:
            raise ConfigError(
                "head",
                f"true, but the data needs outputs of shape {wanted}, which a Linear head does not "
                f"give: {_ending(wanted)} and set head: false",
            )
        if len(builder.shape) != 1:
            raise ConfigError(
                "layers",
                f"the body's output has shape {builder.shape}; end it with `flatten` or "
                "pooling (`sequence_pool` for sequences) so that the Linear head gets "
                "(N, features)",
            )
        modules.append(("head", builder.make("linear", {"out_features": num_outputs}, "head")))
    return nn.Sequential(OrderedDict(modules))


def check_memory(spec: dict, assemble: Callable[[], nn.Module]) -> None:
    """Refuse a net whose weights and gradients need more memory than is available.

    `assemble` builds the net on the meta device: the sizes without the memory. A net that cannot
    be built there (a layer that reads tensor values while built) is left to the real build, as
    are the errors of the spec, which the real build raises with its own values.
    """
    available = available_memory()
    knobs = [f"model.{k}" for k, v in spec.items() if isinstance(v, int) and k != "head"]
    smaller = f"; make it smaller ({', '.join(knobs)})" if knobs else ""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = assemble()
    except RuntimeError as error:
        if "overflow" not in str(error):  # torch: "Storage size calculation overflowed"
            return
        raise ConfigError(
            "",
            f"a layer of the net would have more than 2**63 bytes (torch: {first_line(error)}), "
            f"but {_bytes(available or 0)} of memory is available{smaller}",
        ) from None
    except Exception:  # noqa: BLE001 - see above: the real build reports it
        return
    tensors = [*net.parameters(), *net.buffers()]
    needed = 2 * sum(t.numel() * t.element_size() for t in tensors)  # weights and gradients
    if available is None or needed <= available:
        return
    count = sum(p.numel() for p in net.parameters())
    raise ConfigError(
        "",
        f"the net has {count:,} parameters: training needs at least {_bytes(needed)} for the "
        f"weights and their gradients (optimizer state and activations more), but "
        f"{_bytes(available)} of memory is available{smaller}",
    )


def available_memory() -> int | None:
    """Bytes of memory this process may still use: MemAvailable, within a cgroup's limit."""
    amounts = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                amounts.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            amounts.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:  # a container's limit (cgroup v2) may be below what the machine has free
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            amounts.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return min(amounts) if amounts else None


def _bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} KB"


def _ending(shape: Shape) -> str:
    if len(shape) == 1:
        return f"end `layers` with a linear of out_features {shape[0]}"
    return f"end `layers` with layers that give {shape}"


class _Builder:
    """Builds modules one at a time, tracking the output shape and dtype with a dry forward pass."""

    def __init__(
        self, input_shape: Shape, input_dtype: torch.dtype, vocab_size: int | None
    ) -> None:
        self.shape = input_shape
        self.dtype = input_dtype
        self.vocab_size = vocab_size

    def build_list(self, entries: list, key: str) -> list[tuple[str, nn.Module]]:
        built: list[tuple[str, nn.Module]] = []
        for index, entry in enumerate(entries):
            entry_key = f"{key}[{index}]"
            if entry in SKIP:
                continue
            found = structure_of(entry)
            if found is not None:
                built.extend(build_structure(self, found, entry, entry_key))
                continue
            name, kwargs = _parse_entry(entry, entry_key)
            built.append((name, self.make(name, kwargs, entry_key)))
        return _readable_names(built)

    def make(self, name: str, kwargs: dict, key: str) -> nn.Module:
        entry = LAYERS.get(name, key)
        _check_input(entry, self.shape, self.dtype, key)
        context = {"vocab_size": self.vocab_size, "dtype": self.dtype}
        module = _construct(entry, kwargs, entry.inferred(self.shape, **context), key)
        self.shape, self.dtype = _dry_forward(
            module, entry.name, self.shape, self.dtype, self.vocab_size, key
        )
        return module


def _check_input(entry: LayerEntry, shape: Shape, dtype: torch.dtype, key: str) -> None:
    """Refuse a layer the tracked input cannot go to, by what its entry declares it takes."""
    integer = _is_integer(dtype)
    if entry.inputs == "integer" and not integer:
        raise ConfigError(
            key,
            f"{entry.name} takes integer token ids (data.layout=tokens), got {dtype_name(dtype)} "
            f"inputs of shape {shape}",
        )
    if entry.inputs == "float" and integer:
        raise ConfigError(
            key,
            f"{entry.name} needs float inputs, got integer token ids of shape {shape}: "
            "put an `embedding` before it",
        )
    if entry.ndim is not None and len(shape) != entry.ndim:
        raise ConfigError(key, _ndim_message(entry, shape))


def _ndim_message(entry: LayerEntry, shape: Shape) -> str:
    if entry.ndim != 2:
        return f"{entry.name} needs inputs of {entry.ndim} dimensions, got shape {shape}"
    hint = (
        "a flatten or pooling before it merged the steps"
        if len(shape) < 2
        else "use sequence data (data.layout=sequence) or an embedding of tokens"
    )
    return f"{entry.name} needs (steps, features) sequences, got shape {shape}: {hint}"


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex)


def dtype_name(dtype: torch.dtype) -> str:
    """`float32`, `int64`: a dtype as a message shows it."""
    return str(dtype).removeprefix("torch.")


def _parse_entry(entry: object, key: str) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, kwargs),) = entry.items()
        return str(name), checks.mapping(f"{key}.{name}", kwargs)
    *others, last = ["a layer name", "{name: {kwargs}}", *forms()]
    raise ConfigError(key, f"expected {', '.join(others)} or {last}, got {entry!r}")


def _construct(entry: LayerEntry, kwargs: dict, inferred: dict, key: str) -> nn.Module:
    checks.arguments(f"{key}.{entry.name}", entry.cls, kwargs)
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
    except ConfigError as error:  # a catalogue class checking its own arguments
        raise error.under(f"{key}.{entry.name}") from None
    except (TypeError, ValueError, AssertionError) as error:  # torch asserts some arguments
        raise ConfigError(f"{key}.{entry.name}", f"bad arguments {arguments}: {error}") from None


def _dry_forward(
    module: nn.Module, name: str, shape: Shape, dtype: torch.dtype, vocab_size: int | None, key: str
) -> tuple[Shape, torch.dtype]:
    """The output shape and dtype of `module` on a batch of two inputs of `shape` and `dtype`."""
    if not _is_integer(dtype):
        x = torch.randn(2, *shape)
    else:
        # Every id in [0, vocab_size), in order: an embedding smaller than the vocabulary fails.
        ids = torch.arange(2 * math.prod(shape)).remainder(vocab_size or 1)
        x = ids.reshape(2, *shape).to(dtype)
    # Eval mode: BatchNorm must not move its running statistics on dummy data.
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as error:  # noqa: BLE001 - any failure here is a spec/shape mismatch
        raise ConfigError(
            key, f"{name} cannot take inputs of shape {shape} ({dtype_name(dtype)}): {error}"
        ) from None
    finally:
        module.train()
    if not isinstance(out, torch.Tensor):
        raise ConfigError(
            key, f"{name} returns {type(out).__name__}, not a tensor the next layer can take"
        )
    return tuple(out.shape[1:]), out.dtype


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
