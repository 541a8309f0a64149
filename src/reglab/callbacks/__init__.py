"""Callbacks: one per file. Those that act on training derive from `Control` and are each driven
by one config group (regularization, constraint, dropout, batchnorm, augmentation); the monitors
(history, activation monitor, eval-mode audit) only watch.
"""

from reglab.callbacks.activation_monitor import ActivationMonitor
from reglab.callbacks.batch_augmentation import BatchAugmentation
from reglab.callbacks.control import Control
from reglab.callbacks.dropout_schedule import DropoutSchedule
from reglab.callbacks.epoch_bar import RichEpochBar, TqdmEpochBar, epoch_bar
from reglab.callbacks.epoch_lines import EpochLines
from reglab.callbacks.freeze_batchnorm import FreezeBatchNorm
from reglab.callbacks.history import EpochHistory
from reglab.callbacks.mc_dropout import MCDropout
from reglab.callbacks.mode_audit import EvalModeAudit
from reglab.callbacks.random_state import RandomState
from reglab.callbacks.run_checkpoint import RunCheckpoint
from reglab.callbacks.summary_file import ModelSummaryFile
from reglab.callbacks.weight_constraint import WeightConstraint
from reglab.callbacks.weight_penalty import WeightPenalty

__all__ = [
    "ActivationMonitor",
    "BatchAugmentation",
    "Control",
    "DropoutSchedule",
    "EpochLines",
    "EpochHistory",
    "EvalModeAudit",
    "FreezeBatchNorm",
    "MCDropout",
    "ModelSummaryFile",
    "RandomState",
    "RichEpochBar",
    "RunCheckpoint",
    "TqdmEpochBar",
    "WeightConstraint",
    "WeightPenalty",
    "epoch_bar",
]
