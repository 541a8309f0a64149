"""Callbacks that act on training; one per file, each driven by one config group."""

from reglab.callbacks.history import EpochHistory

__all__ = ["EpochHistory"]
