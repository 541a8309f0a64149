"""Errors reglab raises: a bad configuration value, and a run whose training diverged."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values.

    Classes raise it with their own argument name as the key (`strength`, `layers[2].linear`);
    the config layer, which knows where the node sits, re-raises it `under` the node's path
    (`regularization.strength`, `model.layers[2].linear`).
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def under(self, path: str) -> ConfigError:
        """The same error with its key seen from the config node at `path`."""
        if not path:
            return self
        if not self.key:
            return ConfigError(path, self.message)
        separator = "" if self.key.startswith("[") else "."
        return ConfigError(f"{path}{separator}{self.key}", self.message)


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM stopped training: the run folder keeps its last checkpoint to resume from.

    A BaseException, as KeyboardInterrupt: a sweep stops instead of recording a failed job and
    going on.
    """


class TrainingDiverged(RuntimeError):
    """The training loss or the monitored metric became NaN or infinite: the run has no result."""


def find_config_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind `error` (Hydra's instantiate wraps it), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`, one line (ConfigError: just its message line)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(error, ConfigError):
        return text
    return f"{type(error).__name__}: {text}".strip().rstrip(":")
