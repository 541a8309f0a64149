"""Names that a config value is checked against, known without importing torch or Lightning.

`python train.py model.activation=relux` is answered before reglab.run is imported: the built-in
layers' names by kind, Lightning's built-in strategy names and its Trainer's arguments are written
out here. Tests
(tests/test_startup.py) assert that they equal the layer registry (reglab.nn) and are Lightning's
StrategyRegistry names, so they cannot drift. Layers a plugin registers are found too: a plugin
that registers one has imported reglab.nn, whose registry is then read instead of the table.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from reglab import checks
from reglab.registry import normalize_name

# reglab.nn's catalogue, activations.py, gated.py and sequence.py: canonical name by kind
# (reglab.nn.LAYER_KINDS).
BUILTIN_LAYERS: dict[str, tuple[str, ...]] = {
    "linear": ("gated", "linear"),
    "conv": ("conv2d", "conv3d", "conv_transpose2d"),
    "pool": (
        "adaptive_avg_pool2d", "adaptive_avg_pool3d", "avg_pool2d", "max_pool2d", "max_pool3d",
        "sequence_pool",
    ),
    "norm": (
        "batch_norm1d", "batch_norm2d", "batch_norm3d", "group_norm", "instance_norm2d",
        "layer_norm",
    ),
    "dropout": ("alpha_dropout", "dropout", "dropout2d", "dropout3d"),
    "activation": (
        "elu", "gelu", "hardtanh", "leaky_relu", "log_sigmoid", "log_softmax", "mish", "prelu",
        "relu", "relu6", "selu", "sigmoid", "silu", "softmax", "softmax2d", "softplus", "swish",
        "tanh",
    ),
    "embedding": ("embedding", "positional_encoding"),
    "recurrent": ("gru", "lstm"),
    "attention": ("transformer_encoder",),
    "upsample": ("upsample",),
    "other": ("flatten", "identity"),
}  # fmt: skip
# Config groups whose option is one callback that acts on training (an empty option: nothing).
CONTROL_GROUPS = (
    "regularization",
    "constraint",
    "dropout",
    "batchnorm",
    "augmentation",
    "early_stopping",
)
# Lightning's StrategyRegistry (2.6); a name not listed here is looked up in the registry itself.
LIGHTNING_STRATEGIES = (
    "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true", "ddp_fork",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
    "ddp_notebook", "ddp_notebook_find_unused_parameters_false",
    "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
    "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
    "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp",
    "fsdp_cpu_offload", "single_device", "single_tpu", "single_xla", "xla", "xla_debug",
)  # fmt: skip
# lightning.pytorch.Trainer's arguments (2.6): `+trainer.<key>` must be one of them.
TRAINER_ARGUMENTS = (
    "accelerator", "strategy", "devices", "num_nodes", "precision", "logger", "callbacks",
    "fast_dev_run", "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time",
    "limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
    "overfit_batches", "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps",
    "log_every_n_steps", "enable_checkpointing", "enable_progress_bar", "enable_model_summary",
    "accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "deterministic",
    "benchmark", "inference_mode", "use_distributed_sampler", "profiler", "detect_anomaly",
    "barebones", "plugins", "sync_batchnorm", "reload_dataloaders_every_n_epochs",
    "default_root_dir", "enable_autolog_hparams", "model_registry",
)  # fmt: skip
# As reglab.nn.builder: knobs that name a layer and the kind each takes; values that mean no layer.
LAYER_KNOBS = {"activation": "activation", "norm": "norm"}
SKIP = (None, "none", "null")


def strategy_names(name: str) -> list[str]:
    """Strategy names `trainer.strategy` may take; Lightning is imported only for an unlisted name."""
    if name == "auto" or name in LIGHTNING_STRATEGIES:
        return ["auto", *LIGHTNING_STRATEGIES]
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry]


def layer_names(kind: str) -> list[str]:
    """Canonical names of the layers of `kind`, sorted: the registry's once reglab.nn is imported
    (a plugin may have added some), else the built-in table."""
    nn = sys.modules.get("reglab.nn")
    if nn is not None:
        return nn.layer_names(kind)
    return list(BUILTIN_LAYERS[kind])


def check_knobs(spec: Mapping[str, Any]) -> None:
    """reglab.nn.check_knobs without torch: the same checks, messages and keys (the knob's name).

    Run before reglab.run is imported; the model is built (and checked again) later.
    """
    for knob, kind in LAYER_KNOBS.items():
        if spec.get(knob) not in SKIP:
            check_layer_knob(knob, spec[knob], kind)
    if "dropout" in spec:
        checks.probability("dropout", spec["dropout"], allow_one=False)
    if "width" in spec:
        checks.integer("width", spec["width"], minimum=1)
    if "depth" in spec:
        checks.integer("depth", spec["depth"], minimum=0)


def check_layer_knob(knob: str, value: Any, kind: str) -> None:
    """`value` names a layer of `kind`; else the message reglab.nn.builder gives (value as written)."""
    # A knob may carry arguments, as any spec entry: {swish: {learnable: true}}.
    name = next(iter(value)) if isinstance(value, dict) and len(value) == 1 else value
    names = layer_names(kind)
    canonical = {normalize_name(n): n for n in names}
    found = canonical.get(normalize_name(name)) if isinstance(name, str) else None
    checks.choice(knob, found or value, [*names, "none"])
