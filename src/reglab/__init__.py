"""reglab: a Lightning + Hydra framework for studying regularization."""

__version__ = "0.1.0"
