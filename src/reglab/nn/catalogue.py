"""The catalogue: every layer the seed notes document, registered by short name with its kind.

Each entry says what kind of layer it is (which model knob it may fill: `activation` takes kind
"activation", `norm` kind "norm") and which constructor arguments can be read off the input shape
(without the batch dimension): e.g. `linear` infers `in_features` from the last dimension, `conv2d`
infers `in_channels` from the first, `embedding` its `num_embeddings` from the data's vocabulary
size. Layers defined elsewhere register themselves the same way (Swish in activations.py, the gated
block in gated.py, the recurrent, transformer and sequence layers in sequence.py).

A built-in layer's name is also written in `reglab.names.BUILTIN_LAYERS` (the checks before a run
read it without torch): add or remove it there too; tests/test_startup.py says which names differ.
"""

from __future__ import annotations

from torch import nn

from reglab.nn.registry import Shape, register_layer


def _features_last(shape: Shape) -> dict:
    return {"in_features": shape[-1]}


def _channels_first(shape: Shape) -> dict:
    return {"in_channels": shape[0]}


def _num_features(shape: Shape) -> dict:
    return {"num_features": shape[0]}


def _normalized_shape(shape: Shape) -> dict:
    # LayerNorm over every non-batch dimension: (F,) for features, (C, H, W) for images.
    return {"normalized_shape": list(shape)}


def _vocabulary(shape: Shape, *, vocab_size: int | None) -> dict:
    # Token data know their vocabulary; otherwise `num_embeddings` must be given.
    return {} if vocab_size is None else {"num_embeddings": vocab_size}


def _group_norm(shape: Shape) -> dict:
    channels = shape[0]
    # Default: the largest of 8/4/2 groups that divides the channels and is not one per channel.
    groups = next((g for g in (8, 4, 2) if channels % g == 0 and g < channels), 1)
    return {"num_channels": channels, "num_groups": groups}


# linear
register_layer("linear", nn.Linear, _features_last, kind="linear")
register_layer("flatten", nn.Flatten, kind="other", inputs="any")
register_layer("identity", nn.Identity, kind="other", inputs="any")
# sparse: token ids (N, T) -> vectors (N, T, embedding_dim)
register_layer("embedding", nn.Embedding, _vocabulary, kind="embedding", inputs="integer")
# convolution and pooling
register_layer("conv2d", nn.Conv2d, _channels_first, kind="conv")
register_layer("conv3d", nn.Conv3d, _channels_first, kind="conv")
register_layer("conv_transpose2d", nn.ConvTranspose2d, _channels_first, kind="conv")
register_layer("max_pool2d", nn.MaxPool2d, kind="pool")
register_layer("avg_pool2d", nn.AvgPool2d, kind="pool")
register_layer("adaptive_avg_pool2d", nn.AdaptiveAvgPool2d, kind="pool")
register_layer("max_pool3d", nn.MaxPool3d, kind="pool")
register_layer("adaptive_avg_pool3d", nn.AdaptiveAvgPool3d, kind="pool")
# vision: (C, H, W) -> (C, H', W') by scale_factor or size
register_layer("upsample", nn.Upsample, kind="upsample")
# normalization
register_layer("batch_norm1d", nn.BatchNorm1d, _num_features, kind="norm")
register_layer("batch_norm2d", nn.BatchNorm2d, _num_features, kind="norm")
register_layer("batch_norm3d", nn.BatchNorm3d, _num_features, kind="norm")
register_layer("layer_norm", nn.LayerNorm, _normalized_shape, kind="norm")
register_layer("instance_norm2d", nn.InstanceNorm2d, _num_features, kind="norm")
register_layer("group_norm", nn.GroupNorm, _group_norm, kind="norm")
# dropout
register_layer("dropout", nn.Dropout, kind="dropout")
register_layer("dropout2d", nn.Dropout2d, kind="dropout")
register_layer("dropout3d", nn.Dropout3d, kind="dropout")
register_layer("alpha_dropout", nn.AlphaDropout, kind="dropout")
# activations (torch counts the softmax family among them)
register_layer("relu", nn.ReLU, kind="activation")
register_layer("relu6", nn.ReLU6, kind="activation")
register_layer("leaky_relu", nn.LeakyReLU, kind="activation")
register_layer("prelu", nn.PReLU, kind="activation")
register_layer("elu", nn.ELU, kind="activation")
register_layer("selu", nn.SELU, kind="activation")
register_layer("gelu", nn.GELU, kind="activation")
register_layer("silu", nn.SiLU, kind="activation")
register_layer("mish", nn.Mish, kind="activation")
register_layer("softplus", nn.Softplus, kind="activation")
register_layer("sigmoid", nn.Sigmoid, kind="activation")
register_layer("log_sigmoid", nn.LogSigmoid, kind="activation")
register_layer("tanh", nn.Tanh, kind="activation")
register_layer("hardtanh", nn.Hardtanh, kind="activation")
register_layer("softmax", nn.Softmax, kind="activation")
register_layer("log_softmax", nn.LogSoftmax, kind="activation")
register_layer("softmax2d", nn.Softmax2d, kind="activation")
