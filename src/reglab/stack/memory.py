"""How many members a stacked model may hold: one member's memory against the memory free.

The vectorized launcher (`hydra/launcher=vectorized`) splits a group whose members would not fit
(`reglab.stack.plan.group_limit`); `hydra.launcher.memory_budget` (bytes) overrides the budget.
`member_bytes(cfg)` builds one member as its run builds it (`reglab.build`) and counts what the
stacked fit keeps of it: its data splits (each member holds its own), STATE_COPIES copies of its
weights (weights, gradients, two optimizer moments, the best state and its two moments, the final
state) and the activations of one training batch (each layer's output, kept for the backward
pass, and its gradient), in the trainer's precision. `memory_budget(cfg)` is half the memory
free where the member trains: the GPU's when `trainer.accelerator` takes one and one is there,
else the machine's available RAM.
"""

from __future__ import annotations

import copy
import os

import torch
from omegaconf import DictConfig
from torch import nn

from reglab.build import build_data_and_model

STATE_COPIES = 8
BUDGET_SHARE = 0.5  # of the free memory: the rest is the framework's, the kernels' workspace


def member_bytes(cfg: DictConfig) -> int:
    """About the bytes one member of `cfg` takes in a stacked fit (0 if it does not build: the
    job's own run then says why)."""
    try:
        datamodule, model = build_data_and_model(copy.deepcopy(cfg))
    except Exception:  # noqa: BLE001 - no estimate; the member's run reports its error
        return 0
    width = 8 if str(cfg.trainer.get("precision", "32")).startswith("64") else 4
    weights = sum(p.numel() for p in model.parameters()) * width * STATE_COPIES
    data = sum(
        tensor.numel() * tensor.element_size()
        for split in datamodule.splits.values()
        for tensor in (split.x, split.y)
    )
    return weights + data + 2 * width * _activations(model.net, model, datamodule.batch_size)


def _activations(net: nn.Module, model: nn.Module, batch_size: int) -> int:
    """Elements of every leaf layer's output for one batch of `batch_size` zero inputs."""
    counted = [0]

    def count(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            counted[0] += output.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [leaf.register_forward_hook(count) for leaf in leaves]
    try:
        example = model.example_input_array[:1]
        with torch.no_grad():
            net.eval()(example.expand(batch_size, *example.shape[1:]))
    except Exception:  # noqa: BLE001 - a net that takes no zero input: weights and data only
        return 0
    finally:
        for hook in hooks:
            hook.remove()
    return counted[0]


def memory_budget(cfg: DictConfig) -> int | None:
    """Bytes a stacked model may use: half the free memory of the device it trains on."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free * BUDGET_SHARE)
    available = _available_ram()
    return int(available * BUDGET_SHARE) if available is not None else None


def _available_ram() -> int | None:
    """Linux's MemAvailable (free memory and what the page cache would give back), else the free
    pages, else None (no limit from memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
