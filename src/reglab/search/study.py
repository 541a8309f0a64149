"""The study loop of an Optuna search: this worker's trials, each a full run, and best.yaml.

`run_search` opens the study (storage.py), checks the space and one trial's config first
(space.py, experiment.py), then runs `n_trials` trials, or until the study holds
`total_trials`, each with the trial runner the command hands it (`reglab.run.run_one`). A trial
reports the monitored validation metric every epoch (`OptunaPruning`), so the pruner stops
hopeless ones, recorded as pruned; a failed trial's metrics.json says why; SIGTERM or Ctrl-C
fails the trial, marked interrupted, to run again (interrupt.py). The best parameters and value
go to `best.yaml` in the search folder.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from omegaconf import DictConfig
from typing_extensions import override

from reglab import log
from reglab.build import config_path
from reglab.callbacks.history import epoch_number
from reglab.errors import ConfigError, RunInterrupted, first_line
from reglab.records import write_record
from reglab.search import storage
from reglab.search.console import TrialLines, number, reglab_trial_lines
from reglab.search.experiment import (
    check_same_experiment,
    check_trial_config,
    trial_config,
    trial_overrides,
)
from reglab.search.interrupt import (
    INTERRUPTED_ATTR,
    StopOnSigterm,
    TrialInterrupted,
    reason,
)
from reglab.search.space import PRUNERS, SAMPLERS, check_search, suggest
from reglab.search.storage import WORKER_ATTR
from reglab.sweep import in_multirun, write_failure, write_search_pointer

# What runs a trial: run_one(trial_cfg, extra_callbacks=[...], one_of_many=True) -> objective.
TrialRunner = Callable[..., "float | None"]


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
