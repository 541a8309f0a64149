"""Test a trained checkpoint: `python eval.py ckpt_path=<run folder or checkpoint> [overrides]`.

Writes eval_metrics.json into outputs/eval/<date>/<time>; a bad value exits 2 with one line.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reglab.cli import (
    exit_on_bad_command_line,
    list_help_groups_from_one_repository,
    one_line_composition_errors,
)
from reglab.errors import find_config_error
from reglab.sweep import register_resolvers

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: test the checkpoint; a bad config value exits 2 with one line."""
    try:
        from reglab.evaluate import evaluate

        evaluate(cfg, HydraConfig.get().overrides.task)
    except Exception as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        print(f"reglab: error: {config_error}", file=sys.stderr)
        raise SystemExit(2) from None


def run() -> None:
    """Check the command line's group options, then hand it to Hydra."""
    exit_on_bad_command_line(CONF_DIR)
    list_help_groups_from_one_repository()
    register_resolvers()
    with one_line_composition_errors():  # a misspelled key: one line, not Hydra's error
        main()


if __name__ == "__main__":
    run()
