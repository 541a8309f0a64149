"""Read a sweep folder: one `Job` per job folder (overrides, config, seed, status, metrics, history).

Two jobs are the same configuration when their *effective* configs agree: the composed config
(`.hydra/config.yaml`) less bookkeeping and less the knobs the chosen options ignore
(`regularization=none` ignores every `regularization.*` key, `l1`/`l2` ignore `l1_ratio`). Two
jobs of the same configuration with the same seed are the same run repeated.

The report reads results, not training code (it imports neither torch nor Lightning): which
penalty options a run ignored is read from its metrics.json (`ignored_keys`, written by the run).
A job without them (a failed or unfinished job, or a metrics.json from before reglab recorded
them) takes those of a job with the same penalty kind in the folder; failing that, its knobs are
all compared as written, so two l1 runs of an old sweep that differ only in `l1_ratio` are two
rows.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from omegaconf.errors import OmegaConfBaseException

from reglab.config import CONTROL_GROUPS, digest, neutral_config
from reglab.records import read_record

# Overrides that do not define a configuration: seeds are repeats, the rest is bookkeeping.
IGNORED_KEYS = ("seed", "resume_sweep", "paths.output_dir", "tags")
# The same for the top-level keys of a composed config (paths: where the outputs go).
BOOKKEEPING = ("seed", "resume_sweep", "paths", "tags")  # tags label runs, they change nothing
# A sweep has a config per job: read them with libyaml's safe loader where it is built in.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Job:
    """One job of a sweep."""

    folder: Path
    overrides: dict[str, str]
    status: str  # ok | failed | pruned | missing
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    error: str = ""
    config: dict[str, Any] | None = None  # .hydra/config.yaml; None where the folder has none
    seed: int | None = None  # the run's seed (metrics.json, else the config)
    tags: list[str] = field(
        default_factory=list
    )  # the run's `tags` (metrics.json, else the config)
    # Dotted config keys the run did not read (metrics.json's `ignored_keys`; see the docstring).
    ignored_keys: tuple[str, ...] = ()

    @property
    def config_key(self) -> tuple[tuple[str, str], ...]:
        """The overrides that define its configuration (seed and bookkeeping left out)."""
        items = {k: v for k, v in self.overrides.items() if k.lstrip("+~") not in IGNORED_KEYS}
        if items.get("regularization") == "none":  # `none` ignores every regularization.* knob
            items = {k: v for k, v in items.items() if not k.startswith("regularization.")}
        items = {k: v for k, v in items.items() if k.lstrip("+~") not in self.ignored_keys}
        return tuple(sorted(items.items()))

    @cached_property
    def effective_key(self) -> str:
        """Digest of its effective config (of `config_key` for a folder without a config)."""
        if self.config is None:
            return digest(self.config_key)
        return digest(effective_config(self.config, self.ignored_keys))

    @property
    def penalty_kind(self) -> str | None:
        """Its `regularization.kind` (from the config, else the `regularization` override)."""
        node = (self.config or {}).get("regularization")
        kind = node.get("kind") if isinstance(node, dict) else self.overrides.get("regularization")
        return str(kind) if kind is not None else None

    @property
    def run_key(self) -> tuple[str, str]:
        """(effective config, seed): two jobs with equal keys are one run done twice."""
        seed = self.seed if self.seed is not None else self.overrides.get("seed")
        return self.effective_key, str(seed)


def effective_config(config: dict[str, Any], ignored_keys: Collection[str] = ()) -> dict[str, Any]:
    """`config` (resolved where it can be) less what does not change what the run does.

    Bookkeeping goes; a control group that builds no callback (no `_target_`, as
    `regularization=none`) keeps none of its inert knobs; `ignored_keys` (dotted, as
    `regularization.l1_ratio`: the options a penalty kind does not take) go.
    """
    effective = {k: v for k, v in _resolved(config).items() if k not in BOOKKEEPING}
    for group in CONTROL_GROUPS:
        node = effective.get(group)
        if isinstance(node, dict) and "_target_" not in node:
            effective[group] = {}
    for key in ignored_keys:
        effective = _without(effective, key)
    return effective


def _without(tree: dict[str, Any], dotted: str) -> dict[str, Any]:
    # `tree` less the key at `dotted`, copied along its path; `tree` itself where it has none.
    head, _, rest = dotted.partition(".")
    if not rest:
        return {k: v for k, v in tree.items() if k != head}
    node = tree.get(head)
    return {**tree, head: _without(node, rest)} if isinstance(node, dict) else tree


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    # Resolve before dropping keys, so a value taken from an ignored knob by interpolation still
    # counts. The seed (a run key of its own: `${seed}` elsewhere is the same seed) and the paths
    # (run-specific, resolvable only inside Hydra) are blanked first; a config that still does not
    # resolve outside its run is compared as written.
    try:
        return neutral_config(config, blank_seed=True)
    except OmegaConfBaseException:
        return config


def _overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    entries = yaml.safe_load(path.read_text()) if path.is_file() else []
    pairs = (entry.split("=", 1) for entry in entries or [] if "=" in entry)
    return {key.lstrip("+"): value for key, value in pairs}


def _config(folder: Path) -> dict[str, Any] | None:
    path = folder / ".hydra" / "config.yaml"
    config = yaml.load(path.read_text(), Loader=SAFE_LOADER) if path.is_file() else None
    return config if isinstance(config, dict) else None


def flat_metrics(record: dict) -> dict[str, float]:
    """test/*, best/<val metric>, final/<metric>, epochs_run, wall_time_s of one metrics.json."""
    flat: dict[str, float] = dict(record.get("test", {}))
    flat.update({f"best/{k}": v for k, v in record.get("best", {}).items() if k != "epoch"})
    flat.update({f"final/{k}": v for k, v in record.get("final", {}).items() if k != "epoch"})
    for key in ("epochs_run", "wall_time_s", "best_epoch", "objective"):
        if isinstance(record.get(key), (int, float)):
            flat[key] = float(record[key])
    return flat


def _job_order(folder: Path) -> list[str | int]:
    # Job folders are `<job number>_<overrides>`: job 2 before job 10.
    parts = re.split(r"([0-9]+)", str(folder))  # text, number, text, ...: always comparable
    return [int(part) if i % 2 else part for i, part in enumerate(parts)]


def collect_jobs(sweep_dir: Path, tags: list[str] | None = None) -> list[Job]:
    """Every job folder under `sweep_dir` (those holding a `.hydra` folder), in job order; with
    `tags`, only the jobs carrying all of them."""
    jobs = []
    recorded: dict[Path, bool] = {}  # whether its metrics.json records its ignored keys
    folders = {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    for folder in sorted(folders, key=_job_order):
        record = read_record(folder) or {"status": "missing"}
        config = _config(folder)
        seed = record.get("seed", (config or {}).get("seed"))
        job_tags = [str(t) for t in record.get("tags", (config or {}).get("tags")) or []]
        if tags and not set(tags) <= set(job_tags):
            continue
        jobs.append(
            Job(
                folder=folder,
                overrides=_overrides(folder),
                status=record.get("status", "missing"),
                metrics=flat_metrics(record) if record.get("status") == "ok" else {},
                history=record.get("history", []),
                error=record.get("error", ""),
                config=config,
                seed=seed,
                tags=job_tags,
                ignored_keys=tuple(record.get("ignored_keys", ())),
            )
        )
        recorded[jobs[-1].folder] = "ignored_keys" in record
    return _borrowing_ignored_keys(jobs, recorded)


def _borrowing_ignored_keys(jobs: list[Job], recorded: dict[Path, bool]) -> list[Job]:
    # A job whose metrics.json does not say which keys it ignored (failed, unfinished, or
    # written before they were recorded) takes those of a job of the same penalty kind that does.
    by_kind = {job.penalty_kind: job.ignored_keys for job in jobs if recorded[job.folder]}
    for job in jobs:
        if not recorded[job.folder] and job.penalty_kind in by_kind:
            job.ignored_keys = by_kind[job.penalty_kind]
    return jobs
