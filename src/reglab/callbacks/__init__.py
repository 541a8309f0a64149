"""Callbacks that act on training; one per file, each driven by one config group."""

from reglab.callbacks.history import EpochHistory
from reglab.callbacks.weight_penalty import WeightPenalty

__all__ = ["EpochHistory", "WeightPenalty"]
