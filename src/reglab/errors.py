"""Errors reglab raises: a bad configuration value, and a run whose training diverged."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


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
