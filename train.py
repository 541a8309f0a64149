"""Train one experiment: `python train.py [group=option ...] [key=value ...]` (add -m to sweep)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from reglab.cli import exit_on_bad_command_line
from reglab.errors import RunInterrupted, TrainingDiverged, find_config_error
from reglab.plugins import import_plugins
from reglab.sweep import register_resolvers

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: an Optuna search or one run; a bad config value exits 2 with one line."""
    try:
        import_plugins(cfg.get("plugins") or [])
        if cfg.get("hparams_search"):
            from reglab.search import run_search

            return run_search(cfg)
        from reglab.run import train

        return train(cfg)
    except TrainingDiverged as error:
        print(f"reglab: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except RunInterrupted as interrupted:
        print(f"reglab: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        config_error = find_config_error(error)
        if config_error is None:
            raise
        print(f"reglab: error: {config_error}", file=sys.stderr)
        raise SystemExit(2) from None


def run() -> None:
    """Check the command line's group options, then hand it to Hydra."""
    exit_on_bad_command_line(CONF_DIR)
    register_resolvers()
    main()


if __name__ == "__main__":
    run()
