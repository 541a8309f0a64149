"""Train/eval mode helpers shared by the module and the callbacks: find dropout and BatchNorm
layers, set dropout's p, run Monte-Carlo dropout passes, and save/restore every module's mode.

`nn.LSTM`/`nn.GRU` inter-layer dropout and attention dropout are float attributes, not modules:
`dropout_modules` finds the Dropout, Dropout2d, Dropout3d and AlphaDropout layers only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd


def dropout_modules(module: nn.Module) -> list[nn.Module]:
    """Every dropout layer (anything deriving from torch's `_DropoutNd`) in `module`."""
    return [m for m in module.modules() if isinstance(m, _DropoutNd)]


def batchnorm_modules(module: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer (1d, 2d, 3d, SyncBatchNorm) in `module`."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def set_dropout_p(module: nn.Module, p: float) -> None:
    """Set p of every dropout layer in `module`."""
    for layer in dropout_modules(module):
        layer.p = p


def modes(module: nn.Module) -> dict[str, str]:
    """'train' or 'eval' for `module` and every named submodule ('(root)' for `module`)."""
    return {
        name or "(root)": ("train" if m.training else "eval") for name, m in module.named_modules()
    }


@contextmanager
def kept_modes(module: nn.Module) -> Iterator[nn.Module]:
    """Inside the block change any module's mode; on leaving, every module has its old mode back."""
    saved = [(m, m.training) for m in module.modules()]
    try:
        yield module
    finally:
        for m, training in saved:
            m.train(training)


@torch.no_grad()
def mc_predict(net: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Class probabilities of `samples` passes with only the dropout layers on: (samples, N, C).

    Everything else keeps its mode (BatchNorm in eval stays on its running statistics).
    """
    with kept_modes(net):
        for layer in dropout_modules(net):
            layer.train()
        return torch.stack([F.softmax(net(x), dim=-1) for _ in range(samples)])
