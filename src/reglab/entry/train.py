"""`reglab-train [group=option ...] [key=value ...]` (add -m to sweep); `python train.py` in a clone.

One run, a Hydra sweep (-m) or an Optuna search (`hparams_search=...`), composed from the packaged
configs (conf/train.yaml). Lightning and torch are imported only once a run starts: `--help`,
`--cfg`, `--info` and a bad config value answer without them (tests/test_startup.py).
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from reglab.entry.launch import CONFIG_PATH, config_errors_exit_2, launch
from reglab.errors import ConfigError, RunInterrupted, TrainingDiverged
from reglab.plugins import import_plugins
from reglab.sweep import in_multirun


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: an Optuna search or one run; a bad config value exits 2 with one line."""
    with config_errors_exit_2():
        try:
            import_plugins(cfg.get("plugins") or [])
            if cfg.get("hparams_search"):
                from reglab.run import run_one
                from reglab.search import run_search

                return run_search(cfg, run_trial=run_one)
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
        command = " ".join([command_name(), "-m", *sys.argv[1:]])
        raise ConfigError(
            "experiment",
            f"this experiment is a sweep over {', '.join(swept)}: run it with -m: {command}",
        )


def command_name(argv0: str | None = None) -> str:
    """How the user started this command: `python train.py` from a clone, else `reglab-train`."""
    name = Path(sys.argv[0] if argv0 is None else argv0).name
    return f"python {name}" if name.endswith(".py") else name


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
    """The `reglab-train` command: check the command line, then compose the config and run."""
    launch(main)
