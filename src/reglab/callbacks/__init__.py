"""Callbacks that act on training; one per file, each driven by one config group."""

from reglab.callbacks.activation_monitor import ActivationMonitor
from reglab.callbacks.batch_augmentation import BatchAugmentation
from reglab.callbacks.dropout_schedule import DropoutSchedule
from reglab.callbacks.freeze_batchnorm import FreezeBatchNorm
from reglab.callbacks.history import EpochHistory
from reglab.callbacks.mc_dropout import MCDropout
from reglab.callbacks.mode_audit import EvalModeAudit
from reglab.callbacks.weight_penalty import WeightPenalty

__all__ = [
    "ActivationMonitor",
    "BatchAugmentation",
    "DropoutSchedule",
    "EpochHistory",
    "EvalModeAudit",
    "FreezeBatchNorm",
    "MCDropout",
    "WeightPenalty",
]
