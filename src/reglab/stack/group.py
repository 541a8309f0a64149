"""Train a group of a sweep's jobs as one stacked model, each job a full run in its own folder.

The vectorized launcher (`hydra/launcher=vectorized`) hands each group it planned
(`reglab.stack.plan`) to `run_group`: every member's job folder, .hydra files and Hydra job
callbacks come from Hydra's own `run_job`, whose task builds the member as its sequential run
builds it (`reglab.stack.member.prepare`); then one Lightning Trainer of the members' `trainer`
node (equal across a group) fits the `StackedModule` on the members' stacked batches; then each
member is tested, checkpointed and recorded in its folder (`reglab.stack.member.finish`), with
Hydra's logging pointed at that folder's train.log. A member that fails (while building, by
diverging, or while testing) is recorded as `reglab.run.train` records a failed job; the others
go on; Ctrl-C or SIGTERM records every member as interrupted and stops the sweep (as
`reglab.run` does for one run; a `+resume_sweep` reruns them). `run_members` does the same for configs composed without a sweep (tests, scripts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job
from omegaconf import DictConfig

from reglab import log
from reglab.callbacks.history import FIRST_EPOCH
from reglab.errors import RunInterrupted, first_line
from reglab.records import read_record
from reglab.run_folder import JobBusy, job_lock
from reglab.stack.batches import StackedData
from reglab.stack.member import MemberRun, finish, plain_trainer, prepare
from reglab.stack.memory import member_bytes, memory_budget
from reglab.stack.module import StackedModule
from reglab.sweep import write_failure, write_status

# The launcher's engine interface: run_group, stack_reason, member_bytes and memory_budget.
__all__ = ["member_bytes", "memory_budget", "run_group", "run_members", "stack_reason"]

if TYPE_CHECKING:
    from hydra.types import HydraContext, TaskFunction

    from reglab.stack.plan import Member


def run_members(cfgs: Sequence[DictConfig]) -> list[Any]:
    """Train the runs of `cfgs` (composed configs, one job folder each) as one stacked model;
    return each one's objective (None for a member that failed: its metrics.json says so)."""
    return train_together([_prepared(cfg) for cfg in cfgs])


def train_together(
    runs: Sequence[Any], as_job: Callable[[int], AbstractContextManager] = lambda n: nullcontext()
) -> list[Any]:
    """Fit the built members of `runs` (a MemberRun each; a failed member is None, a skipped one
    a `_Skipped`) as one stacked model, then finish each; each one's objective, in order.
    `as_job(n)` is the context member n's fit (the first built member's) and outputs run in."""
    results = [run.objective if isinstance(run, _Skipped) else None for run in runs]
    built = [n for n, run in enumerate(runs) if isinstance(run, MemberRun)]
    if not built:
        return results
    try:
        with as_job(built[0]):
            fit_trainer, module = fit([runs[n] for n in built])
    except RunInterrupted as stop:  # each member says so (+resume_sweep reruns it); sweep stops
        for n in built:
            with as_job(n):
                cfg = runs[n].cfg
                write_status(Path(cfg.paths.output_dir), cfg, "interrupted", error=str(stop))
        raise
    except Exception as error:  # noqa: BLE001 - the stacked fit failed: each member records it
        for n in built:
            with as_job(n):
                _record_failure(runs[n].cfg, error)
        return results
    for slot, n in enumerate(built):
        with as_job(n):
            results[n] = _finished(runs[n], module.final_state(slot), fit_trainer)
    return results


def fit(runs: Sequence[MemberRun]) -> tuple[Any, StackedModule]:
    """Fit the members of `runs` as one StackedModule, on a Trainer of the first one's `trainer`."""
    module = StackedModule(
        [run.model for run in runs],
        [run.penalty for run in runs],
        [run.course for run in runs],
        [run.controls.get("dropout") for run in runs],  # type: ignore[misc]
    )
    trainer = plain_trainer(runs[0].cfg)
    try:
        trainer.fit(module, datamodule=StackedData([run.datamodule for run in runs]))
    except SystemExit:  # Lightning's answer to SIGINT (exit 1) and SIGTERM (exit 0)
        if not trainer.interrupted:
            raise
        raise RunInterrupted(
            f"interrupted at epoch {trainer.current_epoch + FIRST_EPOCH}"
        ) from None
    return trainer, module


def _prepared(cfg: DictConfig) -> MemberRun | None:
    """The member's run built, or None once its failure is recorded in its folder."""
    try:
        return prepare(cfg)
    except Exception as error:  # noqa: BLE001 - a member's failure is recorded, the group goes on
        _record_failure(cfg, error)
        return None


def _finished(run: MemberRun, final_state: dict, fit_trainer: Any) -> Any:
    try:
        return finish(run, final_state, fit_trainer)
    except Exception as error:  # noqa: BLE001 - as above
        _record_failure(run.cfg, error)
        return None


def _record_failure(cfg: DictConfig, error: BaseException) -> None:
    output_dir = Path(cfg.paths.output_dir)
    write_failure(output_dir, cfg, error)
    log.info(f"reglab: job {output_dir.name} failed: {first_line(error)}")


# --- the vectorized launcher's engine ---------------------------------------------------------


def run_group(
    members: Sequence[Member],
    *,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    sweep_config: DictConfig,
) -> list[JobReturn]:
    """Train the launcher's group `members` as one stacked model; one JobReturn per member."""
    del task_function  # each member's task is reglab's own: build it, then train with the group
    returns: list[JobReturn] = []
    runs: list[MemberRun | _Skipped | None] = []
    with ExitStack() as locks:
        for member in members:
            built: dict[str, Any] = {}

            def task(cfg: DictConfig, built: dict[str, Any] = built) -> Any:
                built["run"] = _job_start(cfg, locks)
                return None

            returns.append(
                run_job(
                    hydra_context=hydra_context,
                    task_function=task,
                    config=member.config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            runs.append(built.get("run"))
        objectives = train_together(runs, lambda n: _as_job(members[n].config))
    for result, objective in zip(returns, objectives, strict=True):
        result.status, result.return_value = JobStatus.COMPLETED, objective
    configure_log(sweep_config.hydra.hydra_logging, sweep_config.hydra.verbose)
    return returns


class _Skipped:
    """A member not run: finished ok before (`+resume_sweep`), or another process runs it."""

    def __init__(self, objective: Any = None) -> None:
        self.objective = objective


def _job_start(cfg: DictConfig, locks: ExitStack) -> MemberRun | _Skipped | None:
    """As `reglab.run.train` starts a sweep job: its lock, the resume skip, then its build."""
    output_dir = Path(cfg.paths.output_dir)
    try:
        locks.enter_context(job_lock(output_dir))
    except JobBusy as busy:
        log.info(f"reglab: skipping job {busy}: another process is running it")
        return _Skipped()
    previous = read_record(output_dir)
    if cfg.get("resume_sweep") and previous and previous["status"] == "ok":
        log.info(f"reglab: skipping {output_dir.name}: already ok")
        return _Skipped(previous.get("objective"))
    return _prepared(cfg)


@contextmanager
def _as_job(config: DictConfig) -> Iterator[None]:
    """Hydra's config and logging as in the member's job (its overrides, its train.log)."""
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    configure_log(config.hydra.job_logging, config.hydra.verbose)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


def stack_reason(cfg: DictConfig) -> str | None:
    """Why the engine cannot train `cfg`'s group stacked (asked of its first member), or None."""
    for group in ("dropout", *UNSTACKED_CONTROLS):
        node = cfg.get(group)
        if not node or "_target_" not in node:
            continue
        target = str(node.get("_target_")).rpartition(".")[2]
        if group != "dropout" or target != "DropoutSchedule":
            return f"{group} ({target}) is not applied by the stacked fit yet"
    return None


# Control groups the stacked fit does not apply yet (`regularization`, `early_stopping` and a
# `dropout` schedule it applies per member).
UNSTACKED_CONTROLS = ("constraint", "batchnorm", "augmentation")
