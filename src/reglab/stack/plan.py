"""Which jobs of a sweep train together as one stacked model, and why each other job runs alone.

The vectorized launcher (src/hydra_plugins/reglab_vectorized_launcher, `hydra/launcher=vectorized`)
composes a sweep's jobs and asks `plan_jobs` for the plan; nothing here trains. Jobs form a group
when their composed configs differ only in VECTORIZABLE keys (the values a stacked model holds per
member: seed, penalty strength and mix, dropout rates, lr, weight decay, label smoothing) or in
BOOKKEEPING keys (what a run records but never reads: its Hydra settings and folder, tags, task
name). Every other job runs alone, as the basic launcher runs it, with one reason line:

- a part of its config that has no stacked form: a run-wide setting (RUN_CHECKS: an Optuna search,
  a resumed run, more than one device, a precision other than 32 or 64 bit) or a config group's
  option (OPTION_CHECKS: regularization none/l1/l2/elastic_net, dropout none or the `constant`
  schedule (fixed rates: constant, zero), batchnorm/augmentation none, the shipped schedulers,
  any EarlyStopping, callbacks default, logger tensorboard/none, debug none, optimizer
  Adam/AdamW/SGD). A group the
  table does not name (a new control such as `constraint`) stacks only while its option builds
  nothing (no `_target_`); data, model, trainer, paths and experiment are judged by their keys.
- a reason of the engine (`engine_reason(cfg)`, e.g. a layer without a stacked form), asked of
  each group's first member: members differ in values only, never in structure;
- a key that is not vectorizable and differs from every other job it could train with;
- a group split by `hydra.launcher.max_members` or by memory (`member_bytes` of its first member
  against `memory_budget`) into parts, balanced in launch order, one of which holds it alone.

Keys are compared as written (OmegaConf, unresolved); where one side is an interpolation, resolved
too (`dropout.epochs=20` equals `${trainer.max_epochs}` at 20). An interpolation written alike
reads other keys, which are compared themselves: `data.shuffle_seed: ${seed}` follows each
member's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reglab import checks

# Keys whose values may differ between the members of one stacked model.
VECTORIZABLE = frozenset(
    {
        "seed",  # each member's initialization, data order (data.shuffle_seed: ${seed}), masks
        "regularization.strength",
        "regularization.l1_ratio",
        "model.dropout",  # the rate of the model's dropout layers (every conf/model/*.yaml)
        "model.drop_path",  # stochastic depth (conf/model/resnet.yaml)
        "dropout.p",  # the `constant` dropout schedule's rate (dropout=constant, zero)
        "optimizer.lr",
        "optimizer.weight_decay",
        "label_smoothing",
    }
)
# Keys a run records but that change nothing it computes (each member keeps its own): tags and the
# task name in metrics.json, the config print, its folder (`hydra`: the job's number, folder,
# overrides and choices; paths.output_dir).
BOOKKEEPING = frozenset({"hydra", "tags", "task_name", "print_config", "paths.output_dir"})
# Groups judged by their keys alone (any option; keys that differ are named).
CONTENT_GROUPS = frozenset({"data", "model", "trainer", "paths", "experiment", "hparams_search"})
EARLY_STOPPING_TARGETS = (
    "lightning.pytorch.callbacks.EarlyStopping",
    "lightning.pytorch.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.EarlyStopping",
)
PRECISIONS = frozenset({"32-true", "32", "64-true", "64"})

# check(job) -> the reason a run-wide setting has no stacked form, or None.
RunCheck = Callable[["Job"], "str | None"]
# check(group, option, node) -> the reason a config group's option has no stacked form, or None.
OptionCheck = Callable[[str, str, Any], "str | None"]


@dataclass(frozen=True)
class Member:
    """One job of a group, as the launcher hands it to `reglab.stack.group.run_group`."""

    number: int  # hydra.job.num: the job's number in the sweep (its folder's prefix)
    overrides: tuple[str, ...]  # the job's overrides, as Hydra's launchers receive them
    config: DictConfig  # composed as Hydra's run_job takes it (hydra.job.id and .num set)


@dataclass(frozen=True)
class Plan:
    """Groups of jobs to train as one stacked model, and the jobs to run alone with a reason.

    Jobs are positions in the configs given to `plan_jobs` (launch order).
    """

    groups: tuple[tuple[int, ...], ...]
    alone: Mapping[int, str] = field(default_factory=dict)

    def units(self) -> list[tuple[int, ...]]:
        """Every group and every alone job (as a 1-tuple), ordered by their first job."""
        return sorted([*self.groups, *((job,) for job in self.alone)], key=lambda unit: unit[0])


def plan_jobs(
    configs: Sequence[DictConfig],
    *,
    first_number: int = 0,
    max_members: int | None = None,
    member_bytes: Callable[[DictConfig], int] | None = None,
    memory_budget: int | None = None,
    engine_reason: Callable[[DictConfig], str | None] | None = None,
) -> Plan:
    """Group `configs` (a sweep's composed job configs, with their `hydra` node, in launch order).

    `first_number` is the job number of `configs[0]` (reasons name job numbers). A group holds at
    most `max_members` jobs and at most `memory_budget // member_bytes(first member)` (bytes); a
    larger one is split in launch order into the fewest parts that fit, of balanced sizes.
    """
    max_members = limit_value("hydra.launcher.max_members", max_members)
    memory_budget = limit_value("hydra.launcher.memory_budget", memory_budget)
    jobs = [Job.of(cfg) for cfg in configs]
    alone = {n: why for n, job in enumerate(jobs) if (why := unsupported(job)) is not None}
    candidates = [n for n in range(len(jobs)) if n not in alone]
    planned: list[tuple[int, ...]] = []
    for group in form_groups(jobs, candidates):
        if len(group) == 1:
            alone[group[0]] = why_alone(jobs, group[0], candidates, first_number)
            continue
        reason = engine_reason(configs[group[0]]) if engine_reason else None
        if reason is not None:
            alone.update(dict.fromkeys(group, reason))
            continue
        limit, why = group_limit(configs[group[0]], max_members, member_bytes, memory_budget)
        for part in split(group, limit):
            if len(part) > 1:
                planned.append(tuple(part))
            else:
                alone[part[0]] = f"{why} split its group (jobs {numbers(group, first_number)})"
    return Plan(groups=tuple(planned), alone=dict(sorted(alone.items())))


def limit_value(key: str, value: Any) -> int | None:
    """A group limit from the launcher's config: null, or a whole number >= 1 (else ConfigError)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 8e9 bytes, as a YAML float
    return checks.integer(key, value, minimum=1)


def numbers(jobs: Sequence[int], first_number: int) -> str:
    """`0, 2, 4`: the job numbers of positions `jobs`."""
    return ", ".join(str(first_number + job) for job in jobs)


KeyPath = tuple[str, ...]  # a key as its parts: ("regularization", "strengths", "net.head.*")
ABSENT = object()


@dataclass(frozen=True)
class Job:
    """One job's config as the plan reads it: composed, as written, flattened, its choices."""

    cfg: DictConfig
    written: dict[str, Any]  # the config as written (interpolations unresolved), less `hydra`
    # `written` flattened (lists and empty mappings are values), less BOOKKEEPING
    flat: dict[KeyPath, Any]
    choices: dict[str, Any]  # hydra.runtime.choices: the option of each config group

    @classmethod
    def of(cls, cfg: DictConfig) -> Job:
        """Read `cfg` once (OmegaConf is slow: every comparison reads these plain copies)."""
        written = {
            key: OmegaConf.to_container(value, resolve=False)
            if OmegaConf.is_config(value)
            else value
            for key, value in cfg.items_ex(resolve=False)
            if key != "hydra"
        }
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices, resolve=False)
        return cls(cfg, written, flatten(written), choices)

    def node(self, group: str) -> Any:
        """The written node of a config group (`a/b` at a.b), None where there is none."""
        node: Any = self.written
        for part in group.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def option(self, group: str) -> str:
        """The option chosen for `group` (a list of options, e.g. callbacks=[a,b], as `[a,b]`)."""
        picked = self.choices.get(group)
        if picked is not None:
            return str(picked)
        node = self.node(group)
        return f"[{','.join(node)}]" if isinstance(node, dict) and node else "none"


def flatten(written: dict[str, Any]) -> dict[KeyPath, Any]:
    """Key path -> value of a plain config (lists and empty mappings are values), less the
    BOOKKEEPING keys, in the config's order."""
    flat: dict[KeyPath, Any] = {}
    stack: list[tuple[KeyPath, Any]] = [((), written)]
    while stack:
        path, node = stack.pop()
        if path and dotted(path) in BOOKKEEPING:
            continue
        if isinstance(node, dict) and (node or not path):
            stack.extend(((*path, str(key)), value) for key, value in reversed(node.items()))
        else:
            flat[path] = node
    return flat


def dotted(path: KeyPath) -> str:
    """`model.width`."""
    return ".".join(path)


def form_groups(jobs: Sequence[Job], candidates: Sequence[int]) -> list[list[int]]:
    """`candidates` in groups, launch order: each job joins the first group whose first job
    differs from it in vectorizable keys only, else starts a group."""
    groups: list[list[int]] = []
    for n in candidates:
        group = next((g for g in groups if joins(jobs[g[0]], jobs[n])), None)
        if group is None:
            groups.append([n])
        else:
            group.append(n)
    return groups


def joins(first: Job, job: Job) -> bool:
    """Whether `job` may train in the group of `first`: no blocking key differs."""
    return next(blocking_keys(first, job), None) is None


# --- what a job's config alone decides -------------------------------------------------------


def run_check(function: RunCheck) -> RunCheck:
    """Add `function` to RUN_CHECKS (in order: the first reason found is the job's)."""
    RUN_CHECKS.append(function)
    return function


RUN_CHECKS: list[RunCheck] = []


@run_check
def no_search(job: Job) -> str | None:
    """An Optuna search runs its own trials."""
    if not job.written.get("hparams_search"):
        return None
    return f"hparams_search={job.option('hparams_search')} (an Optuna search) is not vectorized"


@run_check
def no_resume(job: Job) -> str | None:
    """A run resumed from a checkpoint (ckpt_path) starts from its own file."""
    return "ckpt_path (a resumed run) is not vectorized" if job.written.get("ckpt_path") else None


@run_check
def one_device(job: Job) -> str | None:
    """A stacked model trains on one device of one node, without a distributed strategy."""
    devices = resolved(job.cfg, ("trainer", "devices"))
    strategy = resolved(job.cfg, ("trainer", "strategy"))
    nodes = resolved(job.cfg, ("trainer", "num_nodes"))
    single = devices in (1, "1", ABSENT) or (isinstance(devices, list) and len(devices) == 1)
    found = [] if single else [f"trainer.devices={devices}"]
    if strategy not in ("auto", None, ABSENT):
        found.append(f"trainer.strategy={strategy}")
    if nodes not in (1, ABSENT):
        found.append(f"trainer.num_nodes={nodes}")
    return f"{', '.join(found)}: a stacked model trains on one device" if found else None


@run_check
def full_precision(job: Job) -> str | None:
    """32 and 64 bit floats only (no mixed or half precision)."""
    precision = resolved(job.cfg, ("trainer", "precision"))
    if precision is ABSENT or str(precision) in PRECISIONS:
        return None
    return f"trainer.precision={precision} is not vectorized (32 and 64 bit only)"


def builds_nothing(group: str, option: str, node: Any) -> str | None:
    """Supported while the option builds nothing: no `_target_` anywhere in its node."""
    return f"{group}={option} is not vectorized" if has_target(node) else None


def built_by(*targets: str, **allowed: Sequence[Any]) -> OptionCheck:
    """Supported when the option builds nothing, or builds one of `targets` with each key in
    `allowed` at one of its values."""

    def check(group: str, option: str, node: Any) -> str | None:
        if not has_target(node):
            return None
        if node.get("_target_") not in targets:
            return f"{group}={option} is not vectorized"
        for key, values in allowed.items():
            if node.get(key) not in values:
                setting = f"{group}.{key}={node.get(key)}"
                return f"{group}={option} is not vectorized" + (
                    "" if node.get(key) == option else f" ({setting})"
                )
        return None

    return check


def named(*options: str) -> OptionCheck:
    """Supported for these options of the group only."""

    def check(group: str, option: str, node: Any) -> str | None:
        return None if option in options else f"{group}={option} is not vectorized"

    return check


# The schedulers of conf/scheduler/, run once per member on that member's lr.
SCHEDULERS_PER_MEMBER = ("StepLR", "MultiStepLR", "CosineAnnealingLR", "ReduceLROnPlateau")

# The config groups whose options the stacked engine supports (the first reason found is the
# job's); a group not named here stacks only while its option builds nothing.
OPTION_CHECKS: dict[str, OptionCheck] = {
    "regularization": built_by("reglab.callbacks.WeightPenalty", kind=("l1", "l2", "elastic_net")),
    "dropout": built_by("reglab.callbacks.DropoutSchedule", schedule=("constant",)),
    "batchnorm": builds_nothing,
    "augmentation": builds_nothing,
    "early_stopping": built_by(*EARLY_STOPPING_TARGETS),
    "callbacks": named("default"),
    # Each member's own torch scheduler (reglab.stack.optim.MemberSchedules), stepped as its run's.
    "scheduler": built_by(
        *(f"torch.optim.lr_scheduler.{name}" for name in SCHEDULERS_PER_MEMBER),
    ),
    "logger": named("tensorboard", "none"),
    "debug": named("none"),
    "optimizer": built_by("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"),
}


def unsupported(job: Job) -> str | None:
    """The first part of the job's config without a stacked form (RUN_CHECKS, then each group's
    option: OPTION_CHECKS' groups first, then the others that are not CONTENT_GROUPS)."""
    for check in RUN_CHECKS:
        reason = check(job)
        if reason is not None:
            return reason
    others = [g for g in job.choices if g not in OPTION_CHECKS and g not in CONTENT_GROUPS]
    for group in [*OPTION_CHECKS, *(g for g in others if not g.startswith("hydra"))]:
        check = OPTION_CHECKS.get(group, builds_nothing)
        reason = check(group, job.option(group), job.node(group))
        if reason is not None:
            return reason
    return None


def has_target(node: Any) -> bool:
    """Whether `node` (a plain config node) names a `_target_` at any depth."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "_target_" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# --- what jobs compared with each other decide -----------------------------------------------


def differing_keys(a: Job, b: Job, *, skip: frozenset[str] = frozenset()) -> Iterator[KeyPath]:
    """The keys (less those in `skip`) whose values differ between jobs `a` and `b`: as written,
    and where an interpolation is written, resolved too."""
    for key in [*a.flat, *(k for k in b.flat if k not in a.flat)]:
        mine, theirs = a.flat.get(key, ABSENT), b.flat.get(key, ABSENT)
        if mine == theirs or dotted(key) in skip:
            continue
        literal = not (interpolated(mine) or interpolated(theirs))
        if literal or resolved(a.cfg, key) != resolved(b.cfg, key):
            yield key


def interpolated(value: Any) -> bool:
    """Whether a written value holds an interpolation (`${...}`) anywhere."""
    return "${" in str(value) if isinstance(value, str | list | dict) else False


def resolved(cfg: DictConfig, path: KeyPath) -> Any:
    """The value at `path`, interpolations resolved; ABSENT where it is missing, and a value equal
    to nothing else where it does not resolve (then the written values decide)."""
    node: Any = cfg
    try:
        for part in path:
            if part not in node:
                return ABSENT
            node = node[part]
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a job: compared as written
        return object()
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def blocking_keys(a: Job, b: Job) -> Iterator[KeyPath]:
    """The differing keys of jobs `a` and `b` that members of one stacked model cannot differ in."""
    return differing_keys(a, b, skip=VECTORIZABLE)


def why_alone(jobs: Sequence[Job], n: int, candidates: Sequence[int], first_number: int) -> str:
    """Why job `n` trains with no other job: what differs from the first other job it could join
    (another option of a config group is named by its group, else the first key)."""
    other = next((c for c in candidates if c != n), None)
    if other is None:
        return "no other job of the sweep can train with it"
    job, them, number = jobs[n], jobs[other], first_number + other
    keys = list(blocking_keys(job, them))
    for group, option in job.choices.items():
        prefix = tuple(group.split("/"))
        if group.startswith("hydra") or option == them.choices.get(group):
            continue
        if any(key[: len(prefix)] == prefix for key in keys):
            theirs = them.choices.get(group)
            return f"{group} differs from job {number} ({option} vs {theirs}): another option"
    key = keys[0]
    mine, theirs = shown(job.flat.get(key, ABSENT)), shown(them.flat.get(key, ABSENT))
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"{dotted(key)} differs from job {number} ({mine} vs {theirs}): not a vectorizable key{more}"


def shown(value: Any, width: int = 40) -> str:
    """A value as a reason line shows it: short, `absent` for a missing key."""
    text = "absent" if value is ABSENT else str(value)
    return text if len(text) <= width else f"{text[: width - 3]}..."


# --- splitting a group ----------------------------------------------------------------------


def group_limit(
    first: DictConfig,
    max_members: int | None,
    member_bytes: Callable[[DictConfig], int] | None,
    memory_budget: int | None,
) -> tuple[int | None, str]:
    """The most members a group may hold (None: any number) and what sets that limit."""
    limits: list[tuple[int, str]] = []
    if max_members is not None:
        limits.append((max_members, f"hydra.launcher.max_members={max_members}"))
    if member_bytes is not None and memory_budget is not None:
        each = int(member_bytes(first))
        fit = memory_budget // each if each > 0 else math.inf
        why = f"memory ({mebibytes(each)} a member, budget {mebibytes(memory_budget)})"
        limits.append((max(1, min(fit, 1 << 62)), why))
    return min(limits, key=lambda limit: limit[0]) if limits else (None, "")


def mebibytes(size: int) -> str:
    """`12.3 MiB`."""
    return f"{size / 2**20:.1f} MiB"


def split(group: Sequence[int], limit: int | None) -> list[list[int]]:
    """`group` in launch order as the fewest parts of at most `limit` jobs, sizes balanced
    (differing by at most one, larger parts first)."""
    if limit is None or len(group) <= limit:
        return [list(group)]
    parts = -(-len(group) // limit)
    size, extra = divmod(len(group), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        out.append(list(group[start:end]))
        start = end
    return out
