"""The layer catalogue, the net builder (with residual blocks) and init schemes.

Register a layer defined in any file with `@layer(name, kind=...)` or `register_layer(...)`
(see reglab.nn.registry); it can then be named in a model spec and, by its kind, as a knob.
"""

from reglab.nn import activations, catalogue, gated, sequence  # noqa: F401 - fill the registry
from reglab.nn.builder import build_net, check_knobs
from reglab.nn.init import INIT_SCHEMES
from reglab.nn.registry import (
    LAYER_KINDS,
    LAYERS,
    LayerEntry,
    get_layer,
    layer,
    layer_names,
    register_layer,
)

__all__ = [
    "INIT_SCHEMES",
    "LAYERS",
    "LAYER_KINDS",
    "LayerEntry",
    "build_net",
    "check_knobs",
    "get_layer",
    "layer",
    "layer_names",
    "register_layer",
]
