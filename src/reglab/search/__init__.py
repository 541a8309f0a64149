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

The study loop is study.py, the space (samplers, pruners, parameter types) space.py, the trial
configs and the fixed config a study keeps experiment.py; this package re-exports their names.
"""

from reglab.search.experiment import (
    FIXED_CONFIG_ATTR,
    FIXED_DIGEST_ATTR,
    check_same_experiment,
    check_trial_config,
    fixed_config,
    trial_config,
)
from reglab.search.space import (
    DIRECTIONS,
    PARAM_TYPES,
    PRUNERS,
    SAMPLERS,
    FirstValues,
    check_search,
    suggest,
)
from reglab.search.storage import WORKER_ATTR
from reglab.search.study import OptunaPruning, TrialRunner, run_search, run_trials

__all__ = [
    "DIRECTIONS",
    "FIXED_CONFIG_ATTR",
    "FIXED_DIGEST_ATTR",
    "PARAM_TYPES",
    "PRUNERS",
    "SAMPLERS",
    "WORKER_ATTR",
    "FirstValues",
    "OptunaPruning",
    "TrialRunner",
    "check_same_experiment",
    "check_search",
    "check_trial_config",
    "fixed_config",
    "run_search",
    "run_trials",
    "suggest",
    "trial_config",
]
