"""Optuna hyperparameter search inside one reglab command: `python train.py hparams_search=NAME`.

The `hparams_search` group (conf/hparams_search/) defines the search space, the direction, the
sampler and the pruner. The study lives in an Optuna storage: by default a SQLite file in the
search folder `outputs/search/<study_name>/`, so running the same command again continues the
same study; any RDB URL (`hparams_search.storage=postgresql://...`) lets workers on several
machines share one study. Each trial is a full reglab run (its own folder and metrics.json) that
reports the monitored validation metric every epoch; the pruner stops hopeless trials, which are
recorded as pruned, not failed. The best parameters and value go to `best.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from typing_extensions import override

from reglab import log
from reglab.errors import ConfigError, first_line
from reglab.records import write_record
from reglab.registry import Registry
from reglab.run import config_path, run_one
from reglab.sweep import in_multirun, write_search_pointer

# Each table maps a config value to what builds it: a new sampler, pruner or parameter type is
# one registered function.
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner")
PARAM_TYPES: Registry[Callable[..., Any]] = Registry("parameter type")


@SAMPLERS.register("tpe")
def tpe_sampler(seed: int) -> Any:
    """Optuna's default Tree-structured Parzen Estimator."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


@SAMPLERS.register("random")
def random_sampler(seed: int) -> Any:
    """Independent uniform draws."""
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@PRUNERS.register("median")
def median_pruner(max_epochs: int) -> Any:
    """Stop a trial whose metric is worse than the median of earlier trials at the same epoch."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


@PRUNERS.register("hyperband")
def hyperband_pruner(max_epochs: int) -> Any:
    """Hyperband over 1..max_epochs epochs."""
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)


@PRUNERS.register("none")
def no_pruner(max_epochs: int) -> Any:
    """Every trial runs to its end."""
    import optuna

    return optuna.pruners.NopPruner()


@PARAM_TYPES.register("float")
def suggest_float(trial: Any, name: str, spec: DictConfig) -> float:
    """A float in [low, high], log-uniform with `log: true`."""
    return trial.suggest_float(name, spec.low, spec.high, log=spec.get("log", False))


@PARAM_TYPES.register("int")
def suggest_int(trial: Any, name: str, spec: DictConfig) -> int:
    """An integer in [low, high], log-uniform with `log: true`."""
    return trial.suggest_int(name, spec.low, spec.high, log=spec.get("log", False))


@PARAM_TYPES.register("categorical")
def suggest_categorical(trial: Any, name: str, spec: DictConfig) -> Any:
    """One of `choices`."""
    return trial.suggest_categorical(name, list(spec.choices))


class OptunaPruning(L.Callback):
    """Reports the monitored metric to the trial after every validation; prunes when told."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


def suggest(trial: Any, params: DictConfig) -> dict[str, Any]:
    """Draw one value per parameter of the search space: {override key: value}."""
    return {
        key: PARAM_TYPES.get(spec.get("type"), f"params.{key}.type")(trial, key, spec)
        for key, spec in params.items()
    }


def run_search(cfg: DictConfig) -> float | None:
    """Run `hparams_search.n_trials` more trials of the study; write best.yaml; return best value."""
    try:
        import optuna
    except ImportError as missing:
        raise ConfigError(
            "hparams_search", 'needs Optuna: pip install -e ".[search]" (or pip install optuna)'
        ) from missing

    spec = cfg.hparams_search
    with config_path("hparams_search"):
        sampler = SAMPLERS.get(spec.get("sampler", "tpe"), "sampler")(cfg.seed)
        pruner = PRUNERS.get(spec.get("pruner", "median"), "pruner")(cfg.trainer.max_epochs)
        for key, param in spec.params.items():
            PARAM_TYPES.get(param.get("type"), f"params.{key}.type")
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    storage = spec.get("storage") or f"sqlite:///{folder.resolve() / 'study.db'}"
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        direction=spec.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    base = [o for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, spec.params)
        trial_dir = folder / f"trial_{trial.number:04d}"
        overrides = [*base, *(f"{k}={v}" for k, v in values.items())]
        trial_cfg = compose("train", overrides=[*overrides, f"paths.output_dir={trial_dir}"])
        _write_hydra_overrides(trial_dir, overrides)
        try:
            value = run_one(trial_cfg, extra_callbacks=[OptunaPruning(trial, trial_cfg.monitor)])
        except optuna.TrialPruned as pruned:
            _record(trial_dir, "pruned", pruned, values)
            raise
        except Exception as error:
            _record(trial_dir, "failed", error, values)
            raise
        if value is None:
            raise ConfigError("optimized_metric", "must name a metric for the search to optimize")
        return value

    study.optimize(objective, n_trials=spec.n_trials, catch=(Exception,), gc_after_trial=True)
    best = _write_best(study, folder)
    if in_multirun():  # the -m job records where the study's trials and best.yaml are
        write_search_pointer(Path(cfg.paths.output_dir), cfg, best)
    return best


def _write_hydra_overrides(trial_dir: Path, overrides: list[str]) -> None:
    # The report groups runs by .hydra/overrides.yaml, as for a Hydra multirun.
    (trial_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (trial_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _record(trial_dir: Path, status: str, error: BaseException, values: dict[str, Any]) -> None:
    write_record(trial_dir, {"status": status, "error": first_line(error), "params": values})


def _write_best(study: Any, folder: Path) -> float | None:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.trials:
        counts[trial.state.name.lower()] += 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    if not complete:
        log.info(f"reglab search: no trial completed ({summary}); study in {folder}")
        return None
    best = study.best_trial
    record = {
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "best_value": best.value,
        "best_params": best.params,
        "best_trial": best.number,
        "trials": counts,
    }
    (folder / "best.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    log.info(
        f"reglab search: {summary}; best {best.value:.4g} at trial {best.number}: {best.params}"
    )
    log.info(f"reglab search: wrote {folder / 'best.yaml'}")
    return float(best.value)
