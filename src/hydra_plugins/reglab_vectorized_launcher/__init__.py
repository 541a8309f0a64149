"""reglab's vectorized launcher: the jobs of a sweep that differ only in vectorizable values train
together as one stacked model; every other job runs alone, as Hydra's basic launcher runs it.

    python train.py -m hydra/launcher=vectorized regularization=l2 regularization.strength=1e-4,1e-3 seed=0,1,2

It composes each job once (reglab's sweeper hands over the configs it composed to drop duplicate
runs: `take_composed`; under another sweeper the launcher composes them), asks
`reglab.stack.plan.plan_jobs` for the groups, then, in launch order:

- runs each alone job exactly as BasicLauncher does (same job folders and numbers, the same
  JobReturn; reglab.run.train records a failing job and the sweep goes on), after one line
  `reglab: job <n> runs alone: <reason>` naming the differing key or the unsupported part;
- hands each group to the stacking engine, `reglab.stack.group.run_group(members, *,
  hydra_context, task_function, sweep_config)`: `members` are `reglab.stack.plan.Member`s (job
  number, overrides, composed config with hydra.job.id/num set, as run_job takes it), in launch
  order; `hydra_context` and `task_function` are those run_job takes, so each member's job folder,
  .hydra files, callbacks and (for a member it cannot stack after all) the run itself are as
  run_job makes them; `sweep_config` is the sweep's config (hydra.sweep.*, hydra.launcher.*,
  hydra_logging). It returns one JobReturn per member, in the same order; a member that fails is
  recorded in its folder as reglab.run.train records one (status COMPLETED, return value None).

The engine module may also define `stack_reason(cfg) -> str | None` (why a config has no stacked
form, e.g. a layer without one; asked of each group's first member), `member_bytes(cfg) -> int`
(memory one member needs) and `memory_budget(cfg) -> int | None` (bytes a group may use, when
`hydra.launcher.memory_budget` is null). Until reglab.stack.group exists, each job of a group runs
alone with the line `vectorized training is not available yet`: nothing is stacked silently.

Options: `hydra.launcher.max_members` (null: any number) bounds a group, `hydra.launcher.
memory_budget` (bytes; null: the engine's) too; a larger group is split in launch order. Hydra
finds launchers only in the `hydra_plugins` package, hence this module's place; it registers
`hydra/launcher=vectorized` in Hydra's ConfigStore (VectorizedLauncherConf), so its defaults live
here alone and conf/ holds no YAML for it. Importing it (Hydra imports every plugin at start) loads
neither reglab nor torch.
"""

# No `from __future__ import annotations`: Hydra runs this module without entering it in
# sys.modules, where a dataclass with string annotations looks itself up.
import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

if TYPE_CHECKING:
    from reglab.stack.plan import Member

log = logging.getLogger(__name__)

ENGINE = "reglab.stack.group"  # the module whose run_group trains a group as one stacked model
NOT_AVAILABLE = "vectorized training is not available yet"


@dataclass
class VectorizedLauncherConf:
    """`hydra/launcher=vectorized`: hydra.launcher.max_members, hydra.launcher.memory_budget."""

    _target_: str = "hydra_plugins.reglab_vectorized_launcher.VectorizedLauncher"
    # Any: a bad value gets reglab's one-line error (checked by the launcher), not Hydra's.
    max_members: Any = None  # the most jobs in one stacked model (null: any number)
    memory_budget: Any = None  # bytes a stacked model may use (null: the engine's estimate)


ConfigStore.instance().store(
    group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="reglab"
)


class VectorizedLauncher(Launcher):
    """Trains groups of vectorizable jobs as one stacked model each; runs the others alone."""

    def __init__(self, max_members: Any = None, memory_budget: Any = None) -> None:
        from reglab.entry.launch import config_errors_exit_2  # here: Hydra imports every plugin
        from reglab.stack.plan import limit_value

        with config_errors_exit_2():  # a bad value: one `reglab: error:` line, exit 2
            self.max_members = limit_value("hydra.launcher.max_members", max_members)
            self.memory_budget = limit_value("hydra.launcher.memory_budget", memory_budget)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.composed: dict[tuple[str, ...], DictConfig] = {}  # from the sweeper, by overrides

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what run_job needs (as BasicLauncher does)."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def take_composed(self, configs: Mapping[tuple[str, ...], DictConfig]) -> None:
        """Job configs the sweeper composed already (by their overrides): not composed again."""
        self.composed.update(configs)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run the batch: groups as stacked models, the other jobs alone; returns in batch order."""
        from reglab.stack.plan import Member, plan_jobs

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        configs = [
            self.job_config(overrides, initial_job_idx + index)
            for index, overrides in enumerate(job_overrides)
        ]
        engine = stacking_engine()
        plan = plan_jobs(
            configs,
            first_number=initial_job_idx,
            max_members=self.max_members,
            member_bytes=getattr(engine, "member_bytes", None),
            memory_budget=self.budget(engine, configs),
            engine_reason=getattr(engine, "stack_reason", None),
        )
        reasons = dict(plan.alone)
        units = plan.units()
        if engine is None:  # each job in launch order, the grouped ones saying why
            reasons.update((job, NOT_AVAILABLE) for group in plan.groups for job in group)
            units = [(job,) for job in range(len(configs))]
        returns: list[JobReturn | None] = [None] * len(configs)
        for unit in units:
            members = [
                Member(initial_job_idx + job, tuple(job_overrides[job]), configs[job])
                for job in unit
            ]
            if len(unit) == 1:
                returns[unit[0]] = self.run_alone(members[0], reasons[unit[0]])
            else:
                for job, result in zip(unit, self.run_group(engine, members), strict=True):
                    returns[job] = result
        return returns  # type: ignore[return-value] - every job has its JobReturn now

    def job_config(self, overrides: Sequence[str], number: int) -> DictConfig:
        """A job's config as BasicLauncher composes it (taken from the sweeper when it has it)."""
        assert self.config is not None and self.hydra_context is not None
        config = self.composed.pop(tuple(overrides), None)
        if config is None:
            loader = self.hydra_context.config_loader
            config = loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = number
            config.hydra.job.num = number
        return config

    def budget(self, engine: ModuleType | None, configs: Sequence[DictConfig]) -> int | None:
        """hydra.launcher.memory_budget, else what the engine says a group may use, if it says."""
        if self.memory_budget is not None or not configs:
            return self.memory_budget
        estimate = getattr(engine, "memory_budget", None)
        return estimate(configs[0]) if estimate is not None else None

    def run_alone(self, member: "Member", reason: str) -> JobReturn:
        """One job as BasicLauncher runs it, after its reason line."""
        from reglab import log as reglab_log

        assert self.config is not None
        log.info(f"\t#{member.number} : {' '.join(filter_overrides(member.overrides))}")
        reglab_log.info(f"reglab: job {member.number} runs alone: {reason}")
        result = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=member.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return result

    def run_group(self, engine: ModuleType, members: Sequence["Member"]) -> list[JobReturn]:
        """Hand a group to the engine: one stacked model, one JobReturn per member."""
        from reglab import log as reglab_log

        assert self.config is not None
        numbers = ", ".join(str(member.number) for member in members)
        reglab_log.info(f"reglab: jobs {numbers} train as one stacked model")
        for member in members:
            log.info(f"\t#{member.number} : {' '.join(filter_overrides(member.overrides))}")
        results = list(
            engine.run_group(
                members,
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                sweep_config=self.config,
            )
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if len(results) != len(members):
            raise RuntimeError(
                f"{ENGINE}.run_group returned {len(results)} results for {len(members)} jobs"
            )
        return results


def stacking_engine() -> ModuleType | None:
    """reglab.stack.group, or None while it does not exist (an error inside it is raised)."""
    try:
        return importlib.import_module(ENGINE)
    except ModuleNotFoundError as missing:
        if missing.name != ENGINE:
            raise
        return None
