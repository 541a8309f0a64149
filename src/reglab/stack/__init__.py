"""Vectorized studies: K member nets of one config trained as one stacked module.

`stack_nets` turns K nets built by reglab into a `StackedNet` (inputs and outputs [K, B, ...],
parameters [K, *member_shape] under the member's names); `STACKERS` holds each layer type's
stacked form (`@stacker(MyLayer)` adds one); a layer without one raises `NotStackable`.
"""

from reglab.stack import (  # noqa: F401 - fill the registry
    activations,
    blocks,
    conv,
    dropout,
    linear,
    norm,
    recurrent,
    shared,
    vmapped,
)
from reglab.stack.layers import STACKERS, NotStackable, stack_modules, stacker
from reglab.stack.net import StackedNet, stack_nets

__all__ = ["STACKERS", "NotStackable", "StackedNet", "stack_modules", "stack_nets", "stacker"]
