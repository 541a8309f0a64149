"""One experiment, top to bottom: config -> data -> net -> callbacks -> fit -> test -> metrics.json.

`run_one` is the path of every run (the whole config drives it; `reglab.build` builds each object
from its group, `reglab.summary` writes what the run keeps and says); `train` wraps it for a job
of a sweep (`-m`), which records a failure instead of stopping the sweep. Ctrl-C or SIGTERM during
fit records the run as interrupted, to resume with `ckpt_path=<run folder>`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from reglab import lightning_speedups, log
from reglab.build import build_controls, build_data_and_model, build_trainer, check_optimized_metric
from reglab.callbacks import EpochHistory, RandomState, WeightPenalty
from reglab.callbacks.history import FIRST_EPOCH
from reglab.checkpoint import LAST, check_matches, check_resumable, read_checkpoint, resolve
from reglab.config import validate
from reglab.errors import RunInterrupted, TrainingDiverged, first_line
from reglab.folder_state import SCRATCH, Before, before_run
from reglab.module import RegLabModule
from reglab.plugins import import_plugins
from reglab.records import read_record
from reglab.run_folder import JobBusy, check_writable, clear_previous_attempt, job_lock
from reglab.stopping import stopping_reason
from reglab.summary import (
    header,
    noisy_input_metrics,
    report_unkept,
    summarize,
    write_config_tree,
    write_outputs,
)
from reglab.sweep import in_multirun, share_cores_between_parallel_jobs, write_failure, write_status


def train(cfg: DictConfig) -> float | None:
    """Run one experiment from a composed config; return the value of `optimized_metric`.

    In a multirun a failing job is recorded (`status: failed`) instead of stopping the sweep, and
    with `+resume_sweep=<folder>` a job that already finished ok is skipped.
    """
    if not in_multirun():
        return run_one(cfg)
    share_cores_between_parallel_jobs()
    output_dir = Path(cfg.paths.output_dir)
    try:
        with job_lock(output_dir):  # two resumes of one sweep never both run a job
            previous = read_record(output_dir)
            if cfg.get("resume_sweep") and previous and previous["status"] == "ok":
                log.info(f"reglab: skipping {output_dir.name}: already ok")
                return previous.get("objective")
            return run_one(cfg)
    except JobBusy as busy:
        log.info(f"reglab: skipping job {busy}: another process is running it")
        return None
    except Exception as error:  # noqa: BLE001 - any job failure is recorded, the sweep goes on
        write_failure(output_dir, cfg, error)
        log.info(f"reglab: job {output_dir.name} failed: {first_line(error)}")
        return None


def _removing_what_it_wrote(run: Callable[..., float | None]) -> Callable[..., float | None]:
    """A run that keeps nothing (debug=fdr, keep_outputs=false) removes, however it ends, what
    it wrote: the entries its folder did not hold when it started (`reglab.folder_state`), and
    the folder only if the run created it. In a folder that holds files already it writes in a
    subfolder of its own, so that it overwrites none of them (a user's folder, an earlier run's)."""

    @functools.wraps(run)
    def removing(cfg: DictConfig, *args: Any, **kwargs: Any) -> float | None:
        if cfg.get("keep_outputs", True):
            return run(cfg, *args, **kwargs)
        given = OmegaConf.to_container(cfg.paths, resolve=False)["output_dir"]
        output_dir = Path(cfg.paths.output_dir)
        before = before_run(output_dir)
        if before.entries:
            cfg.paths.output_dir = str(output_dir / SCRATCH)
        try:
            return run(cfg, *args, **kwargs)
        finally:
            _remove_outputs(output_dir, before)
            cfg.paths.output_dir = given

    return removing


@_removing_what_it_wrote
def run_one(
    cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None, *, one_of_many: bool = False
) -> float | None:
    """One run: validate, build, fit, test on the best checkpoint, write metrics.json.

    A job of a sweep, or a run with `one_of_many` (a search's trial), keeps its header, epoch
    lines and result to train.log: the console of many runs holds a line per run.
    """
    started = time.perf_counter()
    one_of_many = one_of_many or in_multirun()
    log.set_one_of_many(one_of_many)
    log.route_library_logs()
    keep, resume = cfg.get("keep_outputs", True), resume_checkpoint(cfg)
    datamodule, model, controls = build_run(cfg, resume, keep)
    if "augmentation" in controls:  # the data module applies it to training batches
        datamodule.train_batch_transform = controls["augmentation"]
    history = EpochHistory()
    # Progress: none in a sweep job or search trial (a line per run), else per epoch or a bar.
    show_progress = bool(cfg.trainer.get("enable_progress_bar", True)) and not one_of_many
    trainer = build_trainer(
        cfg,
        first=[history, RandomState(), *controls.values()],
        last=list(extra_callbacks or []),
        show_progress=show_progress,
    )
    for line in header(cfg, model, datamodule):  # a sweep job's or trial's: train.log only
        log.run_info(line)

    fit = fit_and_test(cfg, trainer, model, datamodule, history, resume)
    summary = summarize(cfg, fit, started)
    summary["noisy_input"] = noisy_input_metrics(datamodule)
    if keep:
        write_outputs(cfg, trainer, summary)
    else:  # its outputs are removed as it returns (_removing_what_it_wrote)
        report_unkept(cfg, summary)
    return summary["objective"]


def build_run(
    cfg: DictConfig, resume: str | None = None, keep: bool = True
) -> tuple[L.LightningDataModule, RegLabModule, dict[str, L.Callback]]:
    """What a run builds before its trainer, in the order that fixes its initialization and data
    (a stacked member of a vectorized study builds through here too): plugins, checks, seed,
    the folder cleared of an earlier attempt, data and model, config_tree.txt, controls."""
    lightning_speedups.apply()
    import_plugins(cfg.get("plugins") or [])  # also for runs not started by train.py
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    if keep:  # a run that keeps nothing leaves earlier results be
        clear_previous_attempt(output_dir, resume)
    datamodule, model = build_data_and_model(cfg)
    if resume:  # a damaged file or another model's: one line now, not a traceback in fit
        check_resume(resume, model)
    if keep:
        check_writable(output_dir, checkpoint_bytes(model))
    write_config_tree(cfg, output_dir)
    controls = build_controls(cfg, model)
    if "regularization" not in controls:  # no penalty: the same reg/ curves at strength 0
        controls["regularization"] = WeightPenalty.baseline()
    if cfg.get("optimized_metric") is not None:  # known now, not after training
        check_optimized_metric(cfg.optimized_metric, model, list(controls.values()))
    return datamodule, model, controls


def fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    model: RegLabModule,
    datamodule: L.LightningDataModule,
    history: EpochHistory,
    ckpt_path: str | None = None,
) -> dict[str, Any]:
    """Fit (resuming from the checkpoint file `ckpt_path` if given), then test the best checkpoint.

    SIGINT or SIGTERM during fit records the run as interrupted and raises RunInterrupted.
    """
    try:
        if ckpt_path:  # Lightning restores before converting: give the weights their dtype first
            trainer.precision_plugin.convert_module(model)  # (64-true: no rounding to float32)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning's answer to SIGINT (exit 1) and SIGTERM (exit 0)
        if not trainer.interrupted:
            raise
        _record_interruption(cfg, trainer)
    # Read fit results now: testing on a checkpoint restores callback states (history, stopper).
    frozen = history.frozen()
    _raise_if_diverged(frozen.epochs, ("train/loss", cfg.monitor))
    stopper = trainer.early_stopping_callback
    reason = stopping_reason(stopper, trainer)
    checkpoint = trainer.checkpoint_callback
    fit = {
        "history": frozen,
        # The last epoch run when early stopping fired, counted from 1 (Lightning's is 0-based).
        "stopped_epoch": stopper.stopped_epoch + FIRST_EPOCH if reason else None,
        "stopping_reason": reason,
        "best_checkpoint": checkpoint.best_model_path if checkpoint else "",
    }
    test = trainer.test(
        model, datamodule=datamodule, ckpt_path=fit["best_checkpoint"] or None, verbose=False
    )
    return {**fit, "test": test[0] if test else {}}


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path` as a checkpoint file (a run folder means its checkpoints/last.ckpt).

    Its content is checked once the model is built (`reglab.checkpoint`).
    """
    given = cfg.get("ckpt_path")
    return str(resolve(given, "last")) if given else None


def _record_interruption(cfg: DictConfig, trainer: L.Trainer) -> None:
    """metrics.json says `interrupted` (a sweep resume reruns the job); raise RunInterrupted."""
    output_dir = Path(cfg.paths.output_dir)
    last = output_dir / "checkpoints" / LAST
    epoch = trainer.current_epoch + FIRST_EPOCH  # the epoch in progress
    message = f"interrupted at epoch {epoch}"
    if trainer.is_global_zero:
        checkpoint = str(last) if last.is_file() else None
        write_status(output_dir, cfg, "interrupted", error=message, last_checkpoint=checkpoint)
    resume = f"; resume with ckpt_path={output_dir}" if last.is_file() else ""
    raise RunInterrupted(message + resume)


def check_resume(ckpt_path: str, model: RegLabModule) -> None:
    """The checkpoint file to resume from is whole, resumable, and the built model's."""
    checkpoint = read_checkpoint(ckpt_path)
    check_resumable(checkpoint)
    check_matches(checkpoint, model)
    del checkpoint  # Lightning reads it again in fit


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About one checkpoint's size: the weights and two optimizer moments (Adam's) per weight."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def _raise_if_diverged(epochs: list[dict[str, float]], keys: tuple[str, ...]) -> None:
    """A non-finite loss or monitored metric in any epoch fails the run (no metrics.json)."""
    for row in epochs:
        bad = {k: row[k] for k in keys if k in row and not math.isfinite(row[k])}
        if bad:
            what = ", ".join(f"{k} = {v}" for k, v in bad.items())
            raise TrainingDiverged(
                f"training diverged at epoch {row['epoch']} ({what}); "
                "lower optimizer.lr or the regularization strength"
            )


@rank_zero_only
def _remove_outputs(output_dir: Path, before: Before) -> None:
    before.remove_new(output_dir)
