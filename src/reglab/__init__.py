"""reglab: a Lightning + Hydra framework for studying regularization."""

# The one place the version is written: pyproject.toml reads it, metrics.json records it, and
# README's "What changed in X.Y" names it (tests/test_readme.py checks they agree).
__version__ = "0.2.0"
