"""Train one experiment: `python train.py [group=option ...] [key=value ...]` (add -m to sweep).

Lightning and torch are imported only once a run starts: `--help`, `--cfg`, `--info` and a bad
config value answer without them (tests/test_startup.py).
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from reglab.cli import (
    exit_on_bad_command_line,
    list_help_groups_from_one_repository,
    one_line_composition_errors,
)
from reglab.errors import ConfigError, RunInterrupted, TrainingDiverged, find_config_error
from reglab.plugins import import_plugins
from reglab.sweep import in_multirun, register_resolvers

CONF_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: an Optuna search or one run; a bad config value exits 2 with one line."""
    try:
        import_plugins(cfg.get("plugins") or [])
        if cfg.get("hparams_search"):
            from reglab.search import run_search

            return run_search(cfg)
        if not in_multirun():  # a sweep job records a bad value as its failure instead
            refuse_a_sweep_without_multirun()
            check_before_importing(cfg)
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


def refuse_a_sweep_without_multirun() -> None:
    """An experiment that defines a sweep (hydra.sweeper.params), run without -m: say how to run it.

    Keys the command line sets itself are not swept: `experiment=ablation_penalty
    regularization=l1 regularization.strength=1e-3 seed=0` is one run of that experiment.
    """
    hydra_cfg = HydraConfig.get()
    params = dict(hydra_cfg.sweeper.get("params") or {})
    given = {arg.split("=", 1)[0].lstrip("+~") for arg in hydra_cfg.overrides.task}
    swept = [key for key in params if key not in given]
    if swept:
        command = " ".join(["python train.py -m", *sys.argv[1:]])
        raise ConfigError(
            "experiment",
            f"this experiment is a sweep over {', '.join(swept)}: run it with -m: {command}",
        )


def check_before_importing(cfg: DictConfig) -> None:
    """The config checks that need no torch, run before reglab.run imports Lightning and torch.

    The run checks all of it again (reglab.run.run_one); this only makes a typo answer in about a
    second instead of after seconds of imports.
    """
    from reglab.config import allow_any_target, plain, validate  # here: not for --help / --cfg
    from reglab.names import check_knobs

    validate(cfg)
    if allow_any_target(cfg):  # a module a `_target_` names could register layers when imported
        return
    try:
        model = plain(cfg.model)
    except OmegaConfBaseException:
        return  # left to the run, which reports it as before
    if isinstance(model, dict):
        try:
            check_knobs(model)
        except ConfigError as error:
            raise error.under("model") from None


def run() -> None:
    """Check the command line's group options, then hand it to Hydra."""
    exit_on_bad_command_line(CONF_DIR)
    list_help_groups_from_one_repository()
    register_resolvers()
    with one_line_composition_errors():  # a misspelled key: one line, not Hydra's error
        main()


if __name__ == "__main__":
    run()
