"""Optuna hyperparameter search inside one reglab command: `python train.py hparams_search=NAME`.

The `hparams_search` group (conf/hparams_search/) defines the search space, the direction, the
sampler and the pruner. The study lives in an Optuna storage: by default a SQLite file in the
search folder `outputs/search/<study_name>/` (one worker at a time), so running the same command
again continues the same study; a PostgreSQL URL (`hparams_search.storage=postgresql://...`) lets
workers on several machines share one study, each started with the same command (storage.py says
how they share it safely). Each trial is a full reglab run (its own folder and metrics.json) that
reports the monitored validation metric every epoch; the pruner, which sees every worker's
trials, stops hopeless ones, recorded as pruned, not failed. A worker runs `n_trials` trials, or
stops once the study holds `total_trials`. The best parameters and value go to `best.yaml`.

Before the first trial the search space, `optimized_metric` and one trial's config (the space's
first values) are checked, so a bad value fails once with one line instead of once per trial.
A study keeps the fixed part of its config (all but the searched keys, paths and seed): a later
command with another fixed config is refused, as its trials would be ranked against runs of a
different experiment. Each trial's sampler is seeded by `seed` and the trial's number
(sampling.py), so a continued study and workers started together draw new parameters. Trials
left RUNNING by a killed worker are failed and retried once (storage.py); a worker stopped by
SIGTERM or Ctrl-C fails its trial itself, marked interrupted, and exits non-zero (interrupt.py).
The console shows reglab's line per trial, not Optuna's (console.py).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from typing_extensions import override

from reglab import checks, log
from reglab.build import build_controls, build_data_and_model, check_optimized_metric, config_path
from reglab.callbacks.history import epoch_number
from reglab.config import digest, neutral_config, validate
from reglab.errors import ConfigError, RunInterrupted, first_line
from reglab.records import write_record
from reglab.registry import Registry
from reglab.search import storage
from reglab.search.console import TrialLines, number, reglab_trial_lines
from reglab.search.interrupt import (
    INTERRUPTED_ATTR,
    StopOnSigterm,
    TrialInterrupted,
    reason,
)
from reglab.search.storage import WORKER_ATTR
from reglab.sweep import in_multirun, write_failure, write_search_pointer

# Each table maps a config value to what builds it: a new sampler, pruner or parameter type is
# one registered function.
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner")
PARAM_TYPES: Registry[Callable[..., Any]] = Registry("parameter type")

DIRECTIONS = ("minimize", "maximize")
# What runs a trial: run_one(trial_cfg, extra_callbacks=[...], one_of_many=True) -> objective.
TrialRunner = Callable[..., "float | None"]
# Study user attributes: the fixed config the study's trials ran with, and its digest.
FIXED_CONFIG_ATTR = "reglab_fixed_config"
FIXED_DIGEST_ATTR = "reglab_fixed_config_digest"
# Keys that change what a run prints or keeps, not its result: left out of the fixed config.
OUTPUT_ONLY_KEYS = (
    "hparams_search",
    "paths",
    "print_config",
    "tags",
    "logger",
    "keep_outputs",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
)


@SAMPLERS.register("tpe")
def tpe_sampler(seed: int) -> Any:
    """Optuna's default Tree-structured Parzen Estimator.

    With its constant liar: trials other workers are running count as bad results, so parallel
    workers do not all propose near the same promising point.
    """
    import optuna

    with warnings.catch_warnings():  # experimental before Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


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


# A parameter type checks its own fields (ConfigError keyed by the field: `low`, `choices`) and
# asks the trial for a value; `suggest` adds `hparams_search.params.<key>` to the key.
@PARAM_TYPES.register("float")
def suggest_float(trial: Any, name: str, spec: DictConfig) -> float:
    """A float in [low, high], log-uniform with `log: true`."""
    low, high, log_scale = _bounds(spec, checks.number)
    return trial.suggest_float(name, low, high, log=log_scale)


@PARAM_TYPES.register("int")
def suggest_int(trial: Any, name: str, spec: DictConfig) -> int:
    """An integer in [low, high], log-uniform with `log: true`."""
    low, high, log_scale = _bounds(spec, lambda key, value: checks.integer(key, value, None))
    return trial.suggest_int(name, low, high, log=log_scale)


@PARAM_TYPES.register("categorical")
def suggest_categorical(trial: Any, name: str, spec: DictConfig) -> Any:
    """One of `choices`."""
    _known_fields(spec, ("type", "choices"))
    choices = spec.get("choices")
    if not isinstance(choices, (list, ListConfig)) or not choices:
        raise ConfigError("choices", f"must be a non-empty list, got {choices!r}")
    for i, choice in enumerate(choices):
        # Optuna stores choices as they are: only scalars compare and persist reliably.
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            raise ConfigError(
                f"choices[{i}]", f"must be a number, string, bool or null: {choice!r}"
            )
    return trial.suggest_categorical(name, list(choices))


def _bounds(spec: DictConfig, number: Callable[[str, Any], Any]) -> tuple[Any, Any, bool]:
    """`low`, `high` and `log` of a range, checked as Optuna would only check them mid-study."""
    _known_fields(spec, ("type", "low", "high", "log"))
    high = number("high", spec.get("high"))
    low = number("low", spec.get("low"))
    if low > high:
        raise ConfigError("low", f"must be <= high ({high!r}), got {low!r}")
    log_scale = spec.get("log", False)
    if not isinstance(log_scale, bool):
        raise ConfigError("log", f"must be true or false, got {log_scale!r}")
    if log_scale and low <= 0:
        raise ConfigError("low", f"must be > 0 with log: true, got {low!r}")
    return low, high, log_scale


def _known_fields(spec: DictConfig, valid: tuple[str, ...]) -> None:
    for field in spec:
        checks.choice(str(field), field, valid)


class OptunaPruning(L.Callback):
    """Reports the monitored metric to the trial after every validation; prunes when told."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import optuna

        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        epoch = trainer.current_epoch  # Optuna's step: Lightning's 0-based epoch, as before
        self.trial.report(float(trainer.callback_metrics[self.monitor]), step=epoch)
        if self.trial.should_prune():  # the message counts from 1, as metrics.json does
            raise optuna.TrialPruned(f"pruned at epoch {epoch_number(trainer)}")


class FirstValues:
    """A stand-in trial answering every suggestion with its first value (`low`, first choice).

    Drawing from it runs every parameter type's checks without a study, and gives one concrete
    trial config to check before the first real trial.
    """

    def suggest_float(self, name: str, low: float, high: float, **options: Any) -> float:
        """`low`."""
        return low

    def suggest_int(self, name: str, low: int, high: int, **options: Any) -> int:
        """`low`."""
        return low

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """The first choice."""
        return choices[0]


def suggest(trial: Any, params: DictConfig) -> dict[str, Any]:
    """Draw one value per parameter of the search space: {override key: value}."""
    values = {}
    for key, spec in params.items():
        with config_path(f"params.{key}"):
            checks.mapping("", spec)
            values[key] = PARAM_TYPES.get(spec.get("type"), "type")(trial, key, spec)
    return values


def check_search(cfg: DictConfig) -> dict[str, Any]:
    """Check the `hparams_search` node and its space; return the space's first values."""
    spec = cfg.hparams_search
    with config_path("hparams_search"):
        SAMPLERS.get(spec.get("sampler", "tpe"), "sampler")
        PRUNERS.get(spec.get("pruner", "median"), "pruner")
        checks.choice("direction", spec.get("direction"), DIRECTIONS)
        for budget in ("n_trials", "total_trials"):
            if spec.get(budget) is not None:
                checks.integer(budget, spec.get(budget), 1)
        if spec.get("n_trials") is None and spec.get("total_trials") is None:
            raise ConfigError(
                "n_trials",
                "must be a number of trials for this worker (or set hparams_search.total_trials, "
                "the study's), got None",
            )
        checks.integer("heartbeat_interval", spec.get("heartbeat_interval", 60), 1)
        if spec.get("grace_period") is not None:
            checks.integer("grace_period", spec.grace_period, 1)
        if not isinstance(spec.get("study_name"), str) or not spec.study_name:
            raise ConfigError(
                "study_name", f"must be a non-empty name, got {spec.get('study_name')!r}"
            )
        if not checks.mapping("params", spec.get("params")):
            raise ConfigError("params", "is empty: name at least one config key to search")
        missing = object()
        for key in spec.params:
            if OmegaConf.select(cfg, str(key), default=missing) is missing:
                raise ConfigError(
                    f"params.{key}",
                    f"{key!r} is not a key of the config (a typo, or a group option without it)",
                )
        return suggest(FirstValues(), spec.params)


def check_trial_config(cfg: DictConfig, values: dict[str, Any], folder: Path) -> None:
    """Compose one trial's config and check it as a run would, before any trial trains.

    Also checks that `optimized_metric` names a metric this task logs: otherwise every trial
    would train and only then fail to find it.
    """
    trial_cfg = trial_config(values, folder)
    validate(trial_cfg)
    _, model = build_data_and_model(trial_cfg)
    controls = build_controls(trial_cfg, model)
    check_optimized_metric(trial_cfg.get("optimized_metric"), model, list(controls.values()))


def trial_config(values: dict[str, Any], trial_dir: Path) -> DictConfig:
    """The config of the command with the trial's values, writing into `trial_dir`."""
    return compose("train", overrides=[*trial_overrides(values), f"paths.output_dir={trial_dir}"])


def trial_overrides(values: dict[str, Any]) -> list[str]:
    """The command's overrides followed by the trial's values (the trial's .hydra/overrides.yaml)."""
    base = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return [*base, *(f"{k}={v}" for k, v in values.items())]


def fixed_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the searched keys, the seed and output-only keys.

    Trials of one study differ only in the searched keys; their seed may vary between commands.
    """
    plain_config = neutral_config(cfg, blank_seed=True)
    for key in [*OUTPUT_ONLY_KEYS, *cfg.hparams_search.params]:
        _drop(plain_config, str(key).split("."))
    return json.loads(json.dumps(plain_config, default=str))  # as a study attribute stores it


def _drop(node: dict[str, Any], path: list[str]) -> None:
    while len(path) > 1 and isinstance(node.get(path[0]), dict):
        node, path = node[path[0]], path[1:]
    if len(path) == 1 and isinstance(node, dict):
        node.pop(path[0], None)


def check_same_experiment(study: Any, cfg: DictConfig) -> None:
    """Refuse a command whose fixed config differs from the study's; a new study records it."""
    spec = cfg.hparams_search
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(
            "hparams_search.direction",
            f"study {study.study_name!r} was created to {study.direction.name.lower()}, got "
            f"{spec.direction!r}; use another hparams_search.study_name",
        )
    fixed = fixed_config(cfg)
    stored = study.user_attrs.get(FIXED_DIGEST_ATTR)
    if stored is None:  # a new study (or one from before this check) takes this config
        study.set_user_attr(FIXED_CONFIG_ATTR, fixed)
        study.set_user_attr(FIXED_DIGEST_ATTR, digest(fixed))
        return
    if stored == digest(fixed):
        return
    changed = _differences(study.user_attrs.get(FIXED_CONFIG_ATTR) or {}, fixed)
    raise ConfigError(
        "hparams_search.study_name",
        f"study {study.study_name!r} ran its trials with another fixed config"
        + (f" ({'; '.join(changed)})" if changed else "")
        + ": its trials would be ranked with these; use another study_name "
        "(or the study's config)",
    )


def _differences(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> list[str]:
    before, after = dict(_flat(old)), dict(_flat(new))
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    shown = [
        f"{k}: {before.get(k, '<absent>')} -> {after.get(k, '<absent>')}" for k in keys[:limit]
    ]
    return shown + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def _flat(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flat(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def run_search(cfg: DictConfig, run_trial: TrialRunner) -> float | None:
    """Run this worker's trials of the study; write best.yaml; return the study's best value.

    `run_trial` runs one trial's config as a run (`reglab.run.run_one`, which the command
    passes; a test passes a stand-in).

    Exits 1 (a multirun job: records the job failed) when the study has no completed trial, or
    when every trial this command ran failed.
    """
    try:
        import optuna  # noqa: F401 - whether it is installed
    except ImportError as missing:
        raise ConfigError(
            "hparams_search", 'needs Optuna: pip install -e ".[search]" (or pip install optuna)'
        ) from missing
    from reglab.search.sampling import PerTrialSeed

    log.route_library_logs()  # Optuna's warnings: console and train.log (trial lines: reglab's)
    spec = cfg.hparams_search
    folder = Path(spec.folder)
    check_trial_config(cfg, check_search(cfg), folder)
    folder.mkdir(parents=True, exist_ok=True)
    with config_path("hparams_search"):
        pruner = PRUNERS.get(spec.get("pruner", "median"), "pruner")(cfg.trainer.max_epochs)
        make_sampler = SAMPLERS.get(spec.get("sampler", "tpe"), "sampler")
    local = not spec.get("storage")  # the default SQLite file: one worker at a time
    with contextlib.ExitStack() as stack:
        if local:
            stack.enter_context(storage.one_local_worker(folder, spec.study_name))
        study, url = storage.open_study(
            spec, folder, pruner, lambda study: check_same_experiment(study, cfg)
        )
        storage.mark_stale_records(study, storage.fail_stale_trials(study, local), folder)
        study.sampler = PerTrialSeed(make_sampler, cfg.seed)
        ran = run_trials(study, cfg, folder, run_trial)
        best = _write_best(
            study, folder, cfg.optimized_metric, None if local else storage.shown_url(url)
        )
    problem = _problem(study, ran, best)
    if in_multirun():  # the -m job records where the study's trials and best.yaml are
        if problem:  # the sweep summary counts the job failed and exits 1
            write_failure(Path(cfg.paths.output_dir), cfg, RuntimeError(problem))
            return None
        write_search_pointer(Path(cfg.paths.output_dir), cfg, best)
    elif problem:
        print(f"reglab: error: {problem}", file=sys.stderr)
        raise SystemExit(1)
    return best


def run_trials(study: Any, cfg: DictConfig, folder: Path, run_trial: TrialRunner) -> list[int]:
    """Run `n_trials` trials (or until the study holds `total_trials`) with `run_trial`; return
    their numbers.

    Other workers may add trials to the study meanwhile.
    """
    import optuna

    spec = cfg.hparams_search
    ran: list[int] = []
    callbacks = []
    if spec.get("total_trials") is not None:
        held = storage.counted_trials(study)
        if held >= spec.total_trials:
            log.info(
                f"reglab search: study {study.study_name!r} holds {held} trials of its "
                f"total_trials={spec.total_trials}: no trial to run"
            )
            return ran
        callbacks.append(storage.stop_at(spec.total_trials))

    sigterm = StopOnSigterm()
    callbacks += [TrialLines(cfg.optimized_metric, folder), sigterm.stop_after_trial]

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        trial.set_user_attr(WORKER_ATTR, storage.worker_identity(spec.get("worker")))
        values: dict[str, Any] = {}
        trial_dir = folder / f"trial_{trial.number:04d}"
        sigterm.in_trial = True
        try:
            if sigterm.received:  # it came between trials, after the last callback
                raise TrialInterrupted("stopped by SIGTERM")
            values = suggest(trial, spec.params)
            _write_hydra_overrides(trial_dir, trial_overrides(values))
            trial_cfg = trial_config(values, trial_dir)
            value = run_trial(
                trial_cfg,
                extra_callbacks=[OptunaPruning(trial, trial_cfg.monitor)],
                one_of_many=True,
            )
        except optuna.TrialPruned as pruned:
            _record(trial_dir, "pruned", pruned, values)
            raise
        except Exception as error:
            _record(trial_dir, "failed", error, values)
            # Its traceback for train.log; the console's line says the error (TrialLines).
            log.detail_logger.info(f"trial {trial.number} failed", exc_info=error)
            raise
        except (KeyboardInterrupt, SystemExit, RunInterrupted) as stop:
            # Lightning ends fit or test on SIGTERM with a SystemExit, reglab's run with
            # RunInterrupted: neither would fail the trial in Optuna.
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            _record(trial_dir, "interrupted", stop, values)
            raise TrialInterrupted(reason(stop, sigterm.received)) from None
        finally:
            sigterm.in_trial = False
        if value is None:
            raise ConfigError("optimized_metric", "must name a metric for the search to optimize")
        return value

    try:
        with sigterm.installed(), reglab_trial_lines():
            study.optimize(
                objective,
                n_trials=spec.get("n_trials"),
                callbacks=callbacks,
                catch=(Exception,),
                gc_after_trial=True,
            )
    except TrialInterrupted as stop:
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == ran[-1])
        storage.retry_once(study, trial)  # the same parameters, once, when the search runs again
        raise RunInterrupted(
            f"search stopped in trial {trial.number} ({stop}): the trial is marked failed "
            "(interrupted) and runs again with its parameters when the command is repeated"
        ) from None
    if sigterm.received:  # during the last trial's test, or between trials
        raise RunInterrupted(f"search stopped by SIGTERM after trial {ran[-1] if ran else '-'}")
    return ran


def _problem(study: Any, ran: list[int], best: float | None) -> str | None:
    """Why this command failed as a search, or None."""
    import optuna

    new = [t for t in study.trials if t.number in ran]
    if best is None:
        return "no trial of the study completed; each trial's metrics.json says why"
    if new and all(t.state == optuna.trial.TrialState.FAIL for t in new):
        return f"all {len(new)} trials of this command failed; each trial's metrics.json says why"
    return None


def _write_hydra_overrides(trial_dir: Path, overrides: list[str]) -> None:
    # The report groups runs by .hydra/overrides.yaml, as for a Hydra multirun.
    (trial_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (trial_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _record(trial_dir: Path, status: str, error: BaseException, values: dict[str, Any]) -> None:
    write_record(trial_dir, {"status": status, "error": first_line(error), "params": values})


def _write_best(study: Any, folder: Path, metric: str, url: str | None) -> float | None:
    """best.yaml for a study with a completed trial (a stale one is removed otherwise).

    Workers sharing the folder write in turn, each from the study as the database holds it then,
    so the last one to finish leaves the whole study's best. `url` (a shared storage, without its
    password) is recorded for the report.
    """
    import optuna

    with storage.folder_lock(folder):
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
        for trial in trials:
            counts[trial.state.name.lower()] += 1
        summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        if not complete:
            (folder / "best.yaml").unlink(missing_ok=True)
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
            **({"storage": url} if url else {}),
        }
        tmp = folder / "best.yaml.tmp"
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))
        tmp.replace(folder / "best.yaml")  # a reader never sees half of it
    params = ", ".join(f"{key}={number(value)}" for key, value in best.params.items())
    log.info(
        f"reglab search: {summary}; best trial {best.number}: {metric}={number(best.value)}"
        + (f" ({params})" if params else "")
    )
    log.info(f"reglab search: wrote {folder / 'best.yaml'}")
    return float(best.value)
