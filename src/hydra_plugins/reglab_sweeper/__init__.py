"""reglab's Hydra sweeper: Hydra's basic sweeper that launches each distinct run once.

A sweep such as `regularization=none,l1 regularization.strength=1e-4,1e-3 seed=0,1` composes
`regularization=none` once per strength, yet `none` ignores every `regularization.*` knob: those
jobs would train the same run again. Before launching, this sweeper composes every job's config
(Hydra's basic sweeper composes each one anyway, to check it) and drops a job whose effective
config and seed equal an earlier job's (`reglab.sweep.run_digest`: what the report counts as the
same run). The first job of each run keeps it; the kept jobs are numbered 0, 1, ... as launched,
so the same command (and `+resume_sweep`) gives the same job folders. It works for every
launcher (basic, joblib, submitit, SLURM): dropped jobs are never started. A launcher with a
`take_composed` method (reglab's vectorized launcher) gets the kept jobs' configs, so that it does
not compose each job again.

Hydra instantiates sweepers only from the `hydra_plugins` package, hence this module's place;
conf/hydra/sweeper/reglab.yaml selects it, and conf/hydra/default.yaml makes it the default
(`hydra/sweeper=basic` on the command line launches every job as before).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class DistinctRunsSweeper(BasicSweeper):
    """BasicSweeper whose batches leave out jobs equal to an earlier job of the sweep."""

    def __init__(self, max_batch_size: int | None = None, params: Any = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.kept_runs: dict[str, int] = {}  # run digest -> number of the job that runs it
        self.skipped: list[dict[str, Any]] = []  # jobs not launched, with the job they equal
        self.composed: dict[tuple[str, ...], Any] = {}  # this batch's job configs, by overrides

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        """The next batch of jobs, less those equal to a job of this or an earlier batch."""
        from reglab import log  # here: this module is imported by every Hydra app
        from reglab.sweep import distinct_jobs, record_skipped, skipped_line

        batch = super().get_job_batch()
        kept, skipped = distinct_jobs(
            batch, self.compose, self.kept_runs, first_number=len(self.kept_runs)
        )
        take_composed = getattr(self.launcher, "take_composed", None)
        if take_composed is not None:  # a launcher that need not compose them again (vectorized)
            take_composed({tuple(job): self.composed[tuple(job)] for job in kept})
        self.composed.clear()
        if skipped:
            log.info(skipped_line(batch, skipped))
        self.skipped += skipped
        # Written with every batch (a rerun into the folder rewrites it): the summary counts it.
        record_skipped(Path(self.config.hydra.sweep.dir), self.skipped)
        return kept

    def compose(self, overrides: Sequence[str]) -> Any:
        """One job's config as its launcher will compose it (kept for a launcher that takes it)."""
        config = self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)
        )
        self.composed[tuple(overrides)] = config
        return config

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing: get_job_batch composed every job of the batch already (and raised if one fails)."""
