"""A sampler seeded per trial: `seed` and the trial's number decide what a trial draws.

Trial numbers are unique in a study (the storage hands them out), so workers started together
with the same command draw different parameters, and a continued study does not re-draw its first
trials. A trial's draw does not depend on which worker runs it: with the random sampler, trial k of
a study with seed s always gets the same parameters; TPE also reads the trials finished so far.
Imported once Optuna is known to be installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial `number`: seeds of nearby (seed, number) pairs do not collide."""
    return int(np.random.SeedSequence([seed % 2**32, number]).generate_state(1)[0])


class PerTrialSeed(BaseSampler):
    """Delegates each trial to a new sampler `make(trial_seed(seed, trial.number))`."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int) -> None:
        self.make, self.seed = make, seed
        self.sampler = make(trial_seed(seed, 0))

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Make the trial's own sampler, seeded by its number."""
        self.sampler = self.make(trial_seed(self.seed, trial.number))
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """The trial's sampler's answer."""
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The trial's sampler's answer."""
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The trial's sampler's answer."""
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """The trial's sampler's bookkeeping."""
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Unused: each trial gets its own seed (Optuna calls this for n_jobs > 1 only)."""
        self.sampler.reseed_rng()
