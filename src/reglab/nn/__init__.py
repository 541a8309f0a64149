"""The layer catalogue, the net builder and init schemes."""

from reglab.nn import activations, catalogue, gated  # noqa: F401 - fill the registry
from reglab.nn.builder import build_net
from reglab.nn.registry import LAYERS, get_layer, layer, layer_names, register_layer

__all__ = ["LAYERS", "build_net", "get_layer", "layer", "layer_names", "register_layer"]
