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

from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reglab.errors import ConfigError
from reglab.sweep import write_record

PARAM_TYPES = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")


class OptunaPruning(L.Callback):
    """Reports the monitored metric to the trial after every validation; prunes when told."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """trial.report(metric, epoch); raise optuna.TrialPruned if the pruner says so."""
        import optuna

        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


def suggest(trial: Any, params: DictConfig) -> dict[str, Any]:
    """Draw one value per parameter of the search space: {override key: value}."""
    values = {}
    for key, spec in params.items():
        kind = spec.get("type")
        if kind == "float":
            values[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.get("log", False))
        elif kind == "int":
            values[key] = trial.suggest_int(key, spec.low, spec.high, log=spec.get("log", False))
        elif kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec.choices))
        else:
            raise ConfigError(
                f"hparams_search.params.{key}.type",
                f"got {kind!r}; valid: {', '.join(PARAM_TYPES)}",
            )
    return values


def _pruner(name: str, max_epochs: int) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError("hparams_search.pruner", f"got {name!r}; valid: {', '.join(PRUNERS)}")


def _sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError("hparams_search.sampler", f"got {name!r}; valid: {', '.join(SAMPLERS)}")


def run_search(cfg: DictConfig) -> float | None:
    """Run `hparams_search.n_trials` more trials of the study; write best.yaml; return best value."""
    try:
        import optuna
    except ImportError as missing:
        raise ConfigError(
            "hparams_search", 'needs Optuna: pip install -e ".[search]" (or pip install optuna)'
        ) from missing

    from reglab.run import run_one

    spec = cfg.hparams_search
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    storage = spec.get("storage") or f"sqlite:///{folder.resolve() / 'study.db'}"
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        direction=spec.direction,
        sampler=_sampler(spec.get("sampler", "tpe"), cfg.seed),
        pruner=_pruner(spec.get("pruner", "median"), cfg.trainer.max_epochs),
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
            _record(trial_dir, "pruned", str(pruned), values)
            raise
        except Exception as error:
            _record(trial_dir, "failed", f"{type(error).__name__}: {error}", values)
            raise
        if value is None:
            raise ConfigError("optimized_metric", "must name a metric for the search to optimize")
        return value

    study.optimize(objective, n_trials=spec.n_trials, catch=(Exception,), gc_after_trial=True)
    return _write_best(study, folder)


def _write_hydra_overrides(trial_dir: Path, overrides: list[str]) -> None:
    # The report groups runs by .hydra/overrides.yaml, as for a Hydra multirun.
    (trial_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (trial_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _record(trial_dir: Path, status: str, message: str, values: dict[str, Any]) -> None:
    record = {
        "status": status,
        "error": message.splitlines()[0] if message else "",
        "params": values,
    }
    write_record(trial_dir, record)


def _write_best(study: Any, folder: Path) -> float | None:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.trials:
        counts[trial.state.name.lower()] += 1
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    if not complete:
        print(f"reglab search: no trial completed ({summary}); study in {folder}")
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
    print(f"reglab search: {summary}; best {best.value:.4g} at trial {best.number}: {best.params}")
    print(f"reglab search: wrote {folder / 'best.yaml'}")
    return float(best.value)
