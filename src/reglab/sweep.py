"""Failure-tolerant, resumable multiruns.

In a multirun (`python train.py -m ...`) a job that raises is recorded in its own `metrics.json`
with `status: failed` and a one-line error, and the sweep goes on. `+resume_sweep=<sweep folder>`
reruns the same sweep into that folder and skips every job whose `metrics.json` says `ok`.
`SweepSummary` (a Hydra callback, in conf/hydra/default.yaml) prints ok/failed/skipped at the end,
then the `reglab-report` command for the sweep folder, and makes the command fail only when every
job it ran failed.

A job equal to an earlier one of the sweep (same effective config and seed, `run_digest`: e.g.
`regularization=none` at each swept strength) is never launched: reglab's sweeper
(src/hydra_plugins/reglab_sweeper) drops it and lists it in the sweep folder's skipped_jobs.yaml.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reglab.config import digest
from reglab.errors import first_line
from reglab.records import read_record, write_record

MAX_DIRNAME = 100
# In a sweep folder: the jobs not launched because an earlier job runs the same run.
SKIPPED_JOBS = "skipped_jobs.yaml"


def job_dirname(overrides: str) -> str:
    """A job folder name from Hydra's override_dirname: no `/`, at most ~100 characters.

    Registered as the `reglab_dirname` resolver (used by hydra.sweep.subdir): a value such as a
    path would otherwise nest folders, and a long sweep would exceed file-name limits.
    """
    name = overrides.replace("/", "_")
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{name[:MAX_DIRNAME]}~{digest}"


def job_folder(num: int, sweep_dir: str, overrides: list[str]) -> str:
    """A sweep job's folder: its number and the overrides that differ between the sweep's jobs.

    Registered as the `reglab_job_folder` resolver (hydra.sweep.subdir). The swept keys are read
    from the sweep's multirun.yaml, which Hydra writes before the first job; without it, every
    override counts. TensorBoard names a run by this folder, so the names stay short.
    """
    from reglab.tensorboard import run_name  # here: train.py imports this module

    multirun = Path(sweep_dir) / "multirun.yaml"
    try:
        stat = multirun.stat()
    except FileNotFoundError:
        swept = frozenset(item.partition("=")[0].lstrip("+") for item in overrides)
    else:
        swept = _swept_keys_in(str(multirun), stat.st_mtime_ns, stat.st_size)
    return job_dirname(run_name(num, list(overrides), swept))


@lru_cache(maxsize=4)
def _swept_keys_in(multirun_yaml: str, mtime_ns: int, size: int) -> frozenset[str]:
    # Parsed once per sweep, not once per job (a tenth of a second each): keyed by the file's
    # modification time and size, so a rewritten multirun.yaml is read again.
    from reglab.tensorboard import swept_keys

    return frozenset(swept_keys(OmegaConf.load(multirun_yaml)))


def register_resolvers() -> None:
    """Make `${reglab_dirname:...}` and `${reglab_job_folder:...}` available (idempotent)."""
    if not OmegaConf.has_resolver("reglab_dirname"):
        OmegaConf.register_new_resolver("reglab_dirname", job_dirname)
    if not OmegaConf.has_resolver("reglab_job_folder"):
        OmegaConf.register_new_resolver("reglab_job_folder", job_folder)


def in_multirun() -> bool:
    """True inside a job of `python train.py -m ...`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def share_cores_between_parallel_jobs() -> None:
    """Under the joblib launcher, give each job cores / n_jobs torch threads (not all cores each)."""
    if not in_multirun():
        return
    launcher = HydraConfig.get().launcher
    n_jobs = launcher.get("n_jobs") if "joblib" in str(launcher.get("_target_", "")) else None
    if n_jobs:
        import torch  # here: train.py imports this module, and --help should not wait for torch

        cores = os.cpu_count() or 1
        parallel = cores if n_jobs < 0 else min(n_jobs, cores)
        torch.set_num_threads(max(1, cores // parallel))


def job_overrides() -> list[str]:
    """The command line's overrides of this run or sweep job (empty outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def write_status(output_dir: Path, cfg: DictConfig, status: str, **details: Any) -> None:
    """A metrics.json for a run without results: failed, interrupted, or a search's pointer."""
    record = {
        "status": status,
        **details,
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "overrides": job_overrides(),
    }
    write_record(output_dir, record)


def write_failure(output_dir: Path, cfg: DictConfig, error: BaseException) -> None:
    """Record a failed job where its metrics.json would be."""
    write_status(output_dir, cfg, "failed", error=first_line(error))


def write_search_pointer(output_dir: Path, cfg: DictConfig, best: float | None) -> None:
    """A search started with -m: its job records where the study's trials and best.yaml are."""
    folder = str(Path(cfg.hparams_search.folder).resolve())
    write_status(output_dir, cfg, "ok", search_folder=folder, objective=best)


def run_digest(cfg: DictConfig) -> str:
    """What makes two sweep jobs one run: their effective config, seed and tags.

    The effective config is the one the report groups by (`reglab.report.collect`): the
    resolved config less bookkeeping and less the knobs the chosen options ignore, so
    `regularization=none` at any strength is one config, while `regularization=l1` at strength 0
    is another. Tags change nothing a run does, but a report filters by them: kept apart. The
    penalty options the run's kind ignores are those its metrics.json will record.
    """
    from reglab.callbacks.weight_penalty import ignored_keys  # here: it imports torch
    from reglab.report.collect import effective_config

    plain_config = OmegaConf.to_container(cfg, resolve=False)
    plain_config.pop("hydra", None)  # the job's Hydra settings (its folder, its number)
    run = {"config": effective_config(plain_config, ignored_keys(cfg))}
    for key in ("seed", "tags"):
        try:
            value = OmegaConf.select(cfg, key)
        except OmegaConfBaseException:  # compared as written, as the report does
            value = plain_config.get(key)
        run[key] = (
            OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value
        )
    return digest(run)


def distinct_jobs(
    batch: Sequence[Sequence[str]],
    compose: Callable[[Sequence[str]], DictConfig],
    kept_runs: dict[str, int],
    first_number: int = 0,
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Split `batch` (one override list per job) into the jobs to launch and those to skip.

    A job is skipped when its run (`run_digest` of the config `compose` gives) is one an earlier
    job has. `kept_runs` maps the runs kept so far to their job numbers (this batch's are added,
    the kept jobs numbered from `first_number`); each skipped job comes back as
    `{"overrides": [...], "same_as_job": number}`.
    """
    kept: list[list[str]] = []
    skipped: list[dict[str, Any]] = []
    for overrides in batch:
        run = run_digest(compose(overrides))
        if run in kept_runs:
            skipped.append({"overrides": list(overrides), "same_as_job": kept_runs[run]})
            continue
        kept_runs[run] = first_number + len(kept)
        kept.append(list(overrides))
    return kept, skipped


def skipped_line(batch: Sequence[Sequence[str]], skipped: list[dict[str, Any]]) -> str:
    """One console line on the skipped jobs, the first shown by its swept overrides."""
    shared = set.intersection(*(set(job) for job in batch))  # the command's fixed overrides
    example = skipped[0]
    swept = ",".join(o for o in example["overrides"] if o not in shared)
    what = (
        f"{len(skipped)} jobs equal to earlier ones"
        if len(skipped) > 1
        else "1 job equal to an earlier one"
    )
    return f"reglab: skipping {what} (e.g. {swept} = job {example['same_as_job']})"


def record_skipped(sweep_dir: Path, skipped: list[dict[str, Any]]) -> None:
    """List the skipped jobs in the sweep folder's SKIPPED_JOBS (none: no file)."""
    path = sweep_dir / SKIPPED_JOBS
    if not skipped:
        path.unlink(missing_ok=True)
        return
    header = (
        "# Jobs of this sweep not launched: each one's effective config and seed equal those of\n"
        "# the job numbered same_as_job (reglab.sweep.run_digest), which ran it.\n"
    )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(skipped, sort_keys=False))


def count_skipped(sweep_dir: Path) -> int:
    """How many jobs the sweep did not launch as equal to earlier ones."""
    path = sweep_dir / SKIPPED_JOBS
    return len(yaml.safe_load(path.read_text()) or []) if path.is_file() else 0


def report_command(sweep_dir: Path) -> str:
    """The command that writes a sweep's report (pyproject's `reglab-report` script)."""
    return f"reglab-report {sweep_dir}"


class SweepSummary(Callback):
    """Counts ok / failed / skipped jobs of a multirun; exit 1 if every job that ran failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember when the sweep started (older ok results were skipped by a resume)."""
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the counts; fail the command if nothing succeeded."""
        from reglab import log  # here: train.py imports this module, and --help needs no logging

        sweep_dir = Path(config.hydra.sweep.dir)
        counts = {"ok": 0, "failed": 0, "skipped": 0, "missing": 0}
        failures = []
        for job_dir in sorted(p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()):
            status = read_record(job_dir)
            if status is None:
                counts["missing"] += 1
            elif (
                status["status"] == "ok"
                and (job_dir / "metrics.json").stat().st_mtime < self.started
            ):
                counts["skipped"] += 1
            elif status["status"] == "ok":
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                failures.append(f"  {job_dir.name}: {status.get('error', '')}")
        duplicates = count_skipped(sweep_dir)  # by the sweeper: never launched
        log.info(
            f"reglab sweep: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"
            + (f", {counts['missing']} without result" if counts["missing"] else "")
            + (f", {duplicates} not run (equal to earlier jobs)" if duplicates else "")
            + f" in {sweep_dir}"
        )
        for line in failures:
            log.info(line)
        if counts["ok"] or counts["skipped"]:  # the next step: tables and plots of the results
            log.info(f"reglab sweep: report: {report_command(sweep_dir)}")
        if counts["failed"] and not counts["ok"]:
            raise SystemExit(1)


register_resolvers()
