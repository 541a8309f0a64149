"""What both commands do around their Hydra main: check the command line, then compose and run.

Before Hydra starts, a bad group option or key gets one `reglab: error:` line and exit 2
(reglab.cli); while it composes, a misspelled key does too. Inside the run, a bad config value
(a reglab.errors.ConfigError) does the same (`config_errors_exit_2`). The configs are the
package's `reglab.conf` (conf/ in a clone), found through the import system, not next to a file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import reglab.conf
from reglab.cli import (
    exit_on_bad_command_line,
    list_help_groups_from_one_repository,
    one_line_composition_errors,
)
from reglab.errors import find_config_error
from reglab.sweep import register_resolvers

# Hydra's name for the packaged configs; the `@hydra.main` of each command reads its primary
# config (train.yaml, eval.yaml) there.
CONFIG_PATH = "pkg://reglab.conf"


def conf_dir() -> Path:
    """The folder of the packaged configs (conf/ in a clone, reglab/conf in a wheel)."""
    return Path(reglab.conf.__file__).resolve().parent


def launch(main: Callable[[], object]) -> None:
    """Check the command line's group options and keys, then hand it to Hydra's `main`."""
    exit_on_bad_command_line(conf_dir())
    list_help_groups_from_one_repository()
    register_resolvers()
    with one_line_composition_errors():  # a misspelled key: one line, not Hydra's error
        main()


@contextmanager
def config_errors_exit_2() -> Iterator[None]:
    """A bad config value raised inside the block: one `reglab: error:` line, exit 2.

    Any other error goes on as it is.
    """
    try:
        yield
    except Exception as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        print(f"reglab: error: {config_error}", file=sys.stderr)
        raise SystemExit(2) from None
