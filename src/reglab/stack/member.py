"""One member of a vectorized study as a full run: built like its sequential run, finished like it.

`prepare(cfg)` builds through `reglab.run.build_run`, as `run_one` does before fitting (validate,
seed_everything, clear the job folder, build data and model, config_tree.txt, controls, the
header lines), so member k's initialization and data are its sequential run's. `finish` does what
`run_one` does after fitting, for the member's course through the stacked fit: its best state
tested on a plain Trainer of its `trainer` node over its own data module (as `fit_and_test`
tests the best checkpoint), the best checkpoint written in its `model_checkpoint` folder (a
Lightning checkpoint with its optimizer state: `RegLabModule.load_from_checkpoint` loads it),
model_summary.txt, its TensorBoard scalars and HPARAMS row, metrics.json and its result line
(`reglab.summary`). Not written (yet): checkpoints/last.ckpt (a member does not resume with
`ckpt_path`), the eval-mode audit lines and the activation monitor's curves. A member that diverged raises
its TrainingDiverged here, to be recorded as a failed job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from reglab import log
from reglab.build import (
    instantiate,
    instantiate_all,
)
from reglab.callbacks import EpochHistory, WeightPenalty
from reglab.module import RegLabModule
from reglab.run import build_run
from reglab.stack.tracking import MemberCourse
from reglab.stopping import stopping_reason
from reglab.summary import header, noisy_input_metrics, summarize, write_outputs
from reglab.sweep import in_multirun


@dataclass
class MemberRun:
    """What a member's run built before fitting, and its course through the stacked fit."""

    cfg: DictConfig
    datamodule: L.LightningDataModule
    model: RegLabModule
    controls: dict[str, L.Callback]
    course: MemberCourse
    started: float = field(default_factory=time.perf_counter)

    @property
    def penalty(self) -> WeightPenalty:
        """The member's weight penalty (a baseline at strength 0 when it has none)."""
        return self.controls["regularization"]  # type: ignore[return-value]


def prepare(cfg: DictConfig) -> MemberRun:
    """Build member `cfg`'s run as `reglab.run.run_one` builds it (same order, same seeding)."""
    started = time.perf_counter()
    log.set_one_of_many(in_multirun())
    log.route_library_logs()
    datamodule, model, controls = build_run(cfg)
    for line in header(cfg, model, datamodule):
        log.run_info(line)
    stopper = controls.get("early_stopping")
    course = MemberCourse(cfg.monitor, cfg.monitor_mode, stopper)  # type: ignore[arg-type]
    return MemberRun(cfg, datamodule, model, controls, course, started)


def finish(run: MemberRun, final_state: dict[str, torch.Tensor], fit_trainer: L.Trainer) -> Any:
    """Test the member's best state, write its checkpoint, TensorBoard and metrics.json; return
    its objective (the value of `optimized_metric`)."""
    cfg, course, model = run.cfg, run.course, run.model
    if course.failure is not None:
        raise course.failure
    trainer = plain_trainer(cfg)
    # As a resume: the weights get the run's dtype before its state is loaded (64-true exact).
    trainer.precision_plugin.convert_module(model)
    best = course.best_state if course.best_state is not None else final_state
    model.net.load_state_dict(best)
    test = trainer.test(model, datamodule=run.datamodule, verbose=False)
    write_model_summary(run, trainer)
    checkpoint = write_checkpoint(run, trainer) if course.best_state is not None else ""
    history = EpochHistory()
    history.epochs = [dict(row) for row in course.epochs]
    reason = stopping_reason(course.stopper, fit_trainer) if course.stopped_epoch else None
    fit = {
        "history": history,
        "stopped_epoch": course.stopped_epoch if reason else None,
        "stopping_reason": reason,
        "best_checkpoint": checkpoint,
        "test": test[0] if test else {},
    }
    summary = summarize(cfg, fit, run.started)
    summary["noisy_input"] = noisy_input_metrics(run.datamodule)
    loggers = instantiate_all(cfg.get("logger"), "logger")
    last_step = course.steps[-1] if course.steps else 0
    for logger in loggers:
        logger.log_hyperparams(model.hparams)
        for row, step in zip(course.epochs, course.steps, strict=False):
            epoch = row["epoch"] - 1  # Lightning's 0-based `epoch` scalar
            logger.log_metrics(
                {**{k: v for k, v in row.items() if k != "epoch"}, "epoch": epoch}, step
            )
        logger.log_metrics(summary["test"], last_step)
    write_outputs(cfg, SimpleNamespace(loggers=loggers, global_step=last_step), summary)  # type: ignore[arg-type]
    return summary["objective"]


def plain_trainer(cfg: DictConfig) -> L.Trainer:
    """A Trainer of `cfg.trainer` (precision, accelerator, limits) without callbacks, loggers,
    checkpointing or progress: what a member's outputs come from is written here, not by it."""
    return instantiate(
        cfg.trainer,
        "trainer",
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def write_model_summary(run: MemberRun, trainer: L.Trainer) -> None:
    """model_summary.txt, as the member's `model_summary` callback writes it when fitting starts."""
    node = (run.cfg.get("callbacks") or {}).get("model_summary")
    if node and "_target_" in node:
        instantiate(node, "callbacks.model_summary").on_fit_start(trainer, run.model)


def write_checkpoint(run: MemberRun, trainer: L.Trainer) -> str:
    """The member's best checkpoint, named by its `model_checkpoint` callback; its path."""
    node = (run.cfg.get("callbacks") or {}).get("model_checkpoint")
    if not node or "_target_" not in node:
        return ""
    callback = instantiate(node, "callbacks.model_checkpoint")
    epoch = run.course.best_epoch - 1
    name = callback.format_checkpoint_name({"epoch": torch.tensor(epoch)})
    path = (
        Path(callback.dirpath or Path(run.cfg.paths.output_dir) / "checkpoints") / Path(name).name
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path, weights_only=True)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    saved["epoch"], saved["global_step"] = epoch, run.course.best_step
    if run.course.best_optimizer is not None:  # as its run's checkpoint holds them
        saved["optimizer_states"] = [run.course.best_optimizer]
        scheduler = run.course.best_scheduler
        saved["lr_schedulers"] = [scheduler] if scheduler is not None else []
    torch.save(saved, path)
    return str(path)
