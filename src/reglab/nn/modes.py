"""Train/eval mode helpers shared by the module and the callbacks: find what carries dropout, set its
rate, run Monte-Carlo dropout passes, and save/restore every module's mode.

Dropout does not live in Dropout layers only. A *dropout carrier* is any module whose rate a
schedule sets and whose train mode switches that randomness on; `CARRIERS` says, per kind, which
class carries it and in which attribute:

    dropout    torch's Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout   `.p`
    drop_path  reglab.nn.drop_path.DropPath (stochastic depth)                       `.p`
    recurrent  nn.LSTM, nn.GRU, nn.RNN: dropout between stacked layers                `.dropout`
    attention  nn.MultiheadAttention: dropout on the attention weights               `.dropout`

The recurrent and attention rates are plain floats read at every forward pass, so code walking the
net for Dropout layers would miss them. An LSTM/GRU/RNN with `num_layers == 1` is not a carrier:
torch applies its dropout only between stacked layers and ignores the rate of a single one.

One module needs more than its carriers in train mode for MC passes: `nn.TransformerEncoderLayer`
in eval mode takes a fused fast path that skips its Dropout children and its attention's dropout,
so `dropout_on` puts the layer itself in train mode too (it holds LayerNorm, which does not depend
on the mode). `dropout_modules` keeps meaning torch's Dropout layers only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from reglab.nn.drop_path import DropPath
from reglab.registry import Registry


def always(module: nn.Module) -> bool:
    """A rate set on the module acts whenever the module is in train mode."""
    return True


def stacked(module: nn.Module) -> bool:
    """Recurrent dropout acts between layers only: there must be two or more."""
    return module.num_layers > 1


@dataclass(frozen=True)
class Carrier:
    """How one class of module carries dropout: the attribute holding its rate, and whether a rate
    set there acts on a given module (`acts`)."""

    cls: type[nn.Module]
    attribute: str
    acts: Callable[[nn.Module], bool] = always

    def rate(self, module: nn.Module) -> float:
        """The module's dropout rate."""
        return float(getattr(module, self.attribute))

    def set_rate(self, module: nn.Module, p: float) -> None:
        """Set the module's dropout rate (read by its next forward pass)."""
        setattr(module, self.attribute, p)


# A module of another kind is one `CARRIERS.register(kind, Carrier(cls, attribute))` away.
CARRIERS: Registry[Carrier] = Registry("dropout kind")
CARRIERS.register("dropout", Carrier(_DropoutNd, "p"))
CARRIERS.register("drop_path", Carrier(DropPath, "p"))
CARRIERS.register("recurrent", Carrier(nn.RNNBase, "dropout", acts=stacked))
CARRIERS.register("attention", Carrier(nn.MultiheadAttention, "dropout"))

# Modules whose fused eval-mode fast path skips the dropout inside them: MC passes put them in train
# mode as well (TransformerEncoderLayer; TransformerEncoder's own fast path checks its first layer).
FAST_PATH_IN_EVAL: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer,)


def carrier_kind(module: nn.Module) -> str | None:
    """The kind of dropout `module` carries (a `CARRIERS` name), or None."""
    for kind in CARRIERS.names():
        carrier = CARRIERS.get(kind)
        if isinstance(module, carrier.cls) and carrier.acts(module):
            return kind
    return None


def dropout_carriers(
    module: nn.Module, kinds: Iterable[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """(kind, carrier) for every module in `module` whose dropout a rate reaches, in module order;
    of the given `kinds` (`CARRIERS` names) only, if any. A one-layer LSTM/GRU/RNN is none."""
    wanted = None if kinds is None else {CARRIERS.canonical(kind) for kind in kinds}
    found = []
    for m in module.modules():
        kind = carrier_kind(m)
        if kind is not None and (wanted is None or kind in wanted):
            found.append((kind, m))
    return found


def carrier_counts(module: nn.Module) -> dict[str, int]:
    """How many carriers of each registered kind `module` holds (kinds without any give 0)."""
    counts = dict.fromkeys(CARRIERS.names(), 0)
    for kind, _ in dropout_carriers(module):
        counts[kind] += 1
    return counts


def dropout_rates(module: nn.Module) -> dict[str, float]:
    """The rate of every carrier in `module`, by module name ('(root)' for `module` itself)."""
    rates = {}
    for name, m in module.named_modules():
        kind = carrier_kind(m)
        if kind is not None:
            rates[name or "(root)"] = CARRIERS.get(kind).rate(m)
    return rates


def dropout_modules(module: nn.Module) -> list[nn.Module]:
    """Every dropout layer (anything deriving from torch's `_DropoutNd`) in `module`."""
    return [m for m in module.modules() if isinstance(m, _DropoutNd)]


def batchnorm_modules(module: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer (1d, 2d, 3d, SyncBatchNorm) in `module`."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def set_dropout_p(module: nn.Module, p: float, kinds: Iterable[str] | None = None) -> None:
    """Set the rate of every dropout carrier in `module` to p (of the given `kinds` only, if any).

    That is Dropout layers' and DropPath's `p`, LSTM/GRU/RNN's `dropout` between stacked layers and
    MultiheadAttention's `dropout`. A one-layer LSTM/GRU/RNN is left as it is: torch ignores its
    rate (dropout acts between layers only), so there is nothing to set.
    """
    for kind, carrier in dropout_carriers(module, kinds):
        CARRIERS.get(kind).set_rate(carrier, p)


def dropout_on(net: nn.Module) -> None:
    """Put every dropout carrier of `net`, and every module whose eval fast path would skip them
    (`FAST_PATH_IN_EVAL`), in train mode; nothing else changes mode (BatchNorm stays as it is).

    Only the module itself is switched, never its children: a TransformerEncoderLayer's LayerNorm
    and Linear layers keep their mode.
    """
    for _, carrier in dropout_carriers(net):
        carrier.training = True
    for m in net.modules():
        if isinstance(m, FAST_PATH_IN_EVAL):
            m.training = True


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
            m.training = training  # each module's own flag: train() would recurse into children


@torch.no_grad()
def mc_predict(net: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Class probabilities of `samples` passes with every dropout carrier on: (samples, N, C).

    Dropout layers, DropPath, recurrent and attention dropout sample at their own rates
    (`dropout_on`); everything else keeps its mode (BatchNorm in eval stays on its running
    statistics). Every module's mode is restored afterwards.
    """
    with kept_modes(net):
        dropout_on(net)
        return torch.stack([F.softmax(net(x), dim=-1) for _ in range(samples)])
