"""One experiment, top to bottom: config -> data -> net -> callbacks -> fit -> test -> metrics.json."""

from __future__ import annotations

import functools
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import reglab
from reglab import checks, lightning_speedups, log
from reglab.callbacks import (
    Control,
    EpochHistory,
    EpochLines,
    RandomState,
    WeightPenalty,
    epoch_bar,
)
from reglab.callbacks.history import FIRST_EPOCH
from reglab.checkpoint import LAST, check_matches, check_resumable, read_checkpoint, resolve
from reglab.config import CONTROL_GROUPS, digest, neutral_config, plain, print_config, validate
from reglab.errors import (
    ConfigError,
    RunInterrupted,
    TrainingDiverged,
    find_config_error,
    first_line,
)
from reglab.folder_state import SCRATCH, Before, before_run
from reglab.module import RegLabModule, check_label_smoothing
from reglab.optim import build_optimizer, build_scheduler, check_optimizer, check_scheduler
from reglab.plugins import import_plugins
from reglab.records import read_record, write_record
from reglab.run_folder import JobBusy, check_writable, clear_previous_attempt, job_lock
from reglab.stopping import stopping_reason
from reglab.sweep import (
    in_multirun,
    job_overrides,
    share_cores_between_parallel_jobs,
    write_failure,
    write_status,
)
from reglab.tensorboard import write_hparams


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
    lightning_speedups.apply()
    import_plugins(cfg.get("plugins") or [])  # also for runs not started by train.py
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    resume = resume_checkpoint(cfg)
    if cfg.get("keep_outputs", True):  # a run that keeps nothing leaves earlier results be
        clear_previous_attempt(output_dir, resume)

    datamodule, model = build_data_and_model(cfg)
    if resume:  # a damaged file or another model's: one line now, not a traceback in fit
        checkpoint = read_checkpoint(resume)
        check_resumable(checkpoint)
        check_matches(checkpoint, model)
        del checkpoint  # Lightning reads it again in fit
    if cfg.get("keep_outputs", True):
        check_writable(output_dir, checkpoint_bytes(model))
    _write_config_tree(cfg, output_dir)
    controls = build_controls(cfg, model)
    if "regularization" not in controls:  # no penalty: the same reg/ curves at strength 0
        controls["regularization"] = WeightPenalty.baseline()
    if cfg.get("optimized_metric") is not None:  # known now, not after training
        check_optimized_metric(cfg.optimized_metric, model, list(controls.values()))
    if "augmentation" in controls:  # the data module applies it to training batches
        datamodule.train_batch_transform = controls["augmentation"]
    history = EpochHistory()
    callbacks = [
        history,
        RandomState(),
        *controls.values(),
        *_instantiate_all(cfg.get("callbacks"), "callbacks"),
        *(extra_callbacks or []),
    ]
    # Progress: none in a sweep job or search trial (a line per run); one line per epoch off a
    # terminal (a log file), else Lightning's bar (counting epochs from 1).
    show_progress = bool(cfg.trainer.get("enable_progress_bar", True)) and not one_of_many
    if show_progress:
        callbacks.append(epoch_bar() if sys.stdout.isatty() else EpochLines())
    loggers = _instantiate_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = _instantiate(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=show_progress,
    )
    for line in header(cfg, model, datamodule):  # a sweep job's or trial's: train.log only
        log.run_info(line)

    fit = fit_and_test(cfg, trainer, model, datamodule, history, resume)
    summary = summarize(cfg, fit, started)
    summary["noisy_input"] = noisy_input_metrics(datamodule)
    if cfg.get("keep_outputs", True):
        _write_outputs(cfg, trainer, summary)
    else:  # its outputs are removed as it returns (_removing_what_it_wrote)
        _report_unkept(cfg, summary)
    return summary["objective"]


def _write_config_tree(cfg: DictConfig, output_dir: Path) -> None:
    """config_tree.txt in the run folder; the console shows it only with print_config=true."""
    if cfg.get("print_config", False):
        print_config(cfg)
    if cfg.get("keep_outputs", True) and rank_zero_only.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "config_tree.txt", "w") as file:
            print_config(cfg, file=file)


def header(cfg: DictConfig, model: RegLabModule, datamodule: Any) -> list[str]:
    """What runs, in two or three lines: model, data, optimizer, the controls, the run folder."""
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}

    def option(group: str) -> str:
        node = cfg.get(group)
        fallback = str(node.get("_target_", "")).rpartition(".")[2] if node else "none"
        return str(choices.get(group) or fallback or "none")

    params = sum(p.numel() for p in model.parameters())
    sizes = " / ".join(f"{len(split.x)} {name}" for name, split in datamodule.splits.items())
    optimizer = cfg.optimizer
    lines = [
        f"reglab: {option('model')} ({_count(params)} parameters) on {option('data')} ({sizes}), "
        f"{option('optimizer')} lr {_short(optimizer.get('lr'))}, seed {cfg.seed}"
    ]
    controls = [f"{group}={option(group)}" for group in CONTROL_GROUPS if cfg.get(group)]
    controls = [c for c in controls if not c.endswith("=none")]
    if cfg.get("regularization") and "strength" in cfg.regularization and controls:
        controls = [
            f"{c} (strength {_short(cfg.regularization.strength)})"
            if c.startswith("regularization")
            else c
            for c in controls
        ]
    if controls:
        lines.append("reglab: " + ", ".join(controls))
    if cfg.get("keep_outputs", True):  # else the folder is gone when the run ends
        lines.append(f"reglab: run folder {cfg.paths.output_dir}")
    return lines


def _short(value: Any) -> str:
    # A drawn value (a search's lr 0.00040246996870051696) in four significant digits.
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _count(n: int) -> str:
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def build_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, RegLabModule]:
    """The data module and the LightningModule sized to it; optimizer and scheduler checked."""
    datamodule = _instantiate(cfg.data, "data")
    optimizer, scheduler = plain(cfg.optimizer), plain(cfg.get("scheduler"))
    with config_path("optimizer"):
        check_optimizer(optimizer)
    if scheduler:
        with config_path("scheduler"):
            check_scheduler(scheduler)
    with config_path("data", (ValueError, OSError)):  # the arrays load here: refused now
        input_shape, num_outputs = list(datamodule.input_shape), datamodule.num_outputs
    # Checked here, outside config_path("model"): the key is top-level `label_smoothing`.
    label_smoothing = check_label_smoothing(cfg.get("label_smoothing", 0.0), datamodule.task)
    with config_path("model"):
        model = RegLabModule(
            model=plain(cfg.model),
            input_shape=input_shape,
            num_outputs=num_outputs,
            task=datamodule.task,
            optimizer=optimizer,
            scheduler=scheduler,
            monitor=cfg.monitor,
            log_every_step=cfg.get("log_every_step", False),
            input_dtype=str(datamodule.input_dtype).removeprefix("torch."),
            vocab_size=datamodule.vocab_size,
            target_shape=list(datamodule.target_shape),
            label_smoothing=label_smoothing,
        )
    _dry_build_optimization(model)
    checks.choice("monitor", cfg.monitor, model.metric_names("val"))  # what this task logs
    return datamodule, model


def build_controls(cfg: DictConfig, model: RegLabModule) -> dict[str, L.Callback]:
    """One callback per selected control group, each checked against the model before training."""
    controls = {
        group: _instantiate(cfg[group], group)
        for group in CONTROL_GROUPS
        if cfg.get(group) and "_target_" in cfg[group]
    }
    for group, control in controls.items():
        if isinstance(control, Control):
            with config_path(group):
                control.check(model)
    return controls


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """About one checkpoint's size: the weights and two optimizer moments (Adam's) per weight."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def check_optimized_metric(name: Any, model: RegLabModule, controls: list[Any]) -> str:
    """`best/` or `final/` + a val/ or train/ metric, or `test/` + a metric, of those logged."""
    val, train, test = (_logged(stage, model, controls) for stage in ("val", "train", "test"))
    valid = [
        *(f"{at}/{metric}" for at in ("best", "final") for metric in ["epoch", *val, *train]),
        *test,
    ]
    if name is None:
        raise ConfigError("optimized_metric", f"name one to optimize; valid: {', '.join(valid)}")
    return checks.choice("optimized_metric", name, valid)


def _logged(stage: str, model: RegLabModule, controls: list[Any]) -> list[str]:
    # Controls that log metrics of their own (MC dropout's val/mc_acc) list them.
    names = list(model.metric_names(stage))
    for control in controls:
        if isinstance(control, Control):
            names += control.metric_names(stage)
    return names


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


@contextmanager
def config_path(path: str, library_errors: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Re-raise a ConfigError from inside the block with its key under the config node `path`.

    Errors of the types `library_errors` (a constructor's ValueError) become a ConfigError on
    the node itself, with their first line.
    """
    try:
        yield
    except ConfigError as error:
        raise error.under(path) from None
    except library_errors as error:
        raise ConfigError(path, first_line(error)) from None


def _dry_build_optimization(module: RegLabModule) -> None:
    """Build the optimizer and scheduler once: what the value checks cannot foresee fails now."""
    hparams = module.hparams
    with config_path("optimizer", (ValueError, TypeError)):
        optimizer = build_optimizer(module.net, hparams.optimizer)
    if hparams.scheduler:
        with config_path("scheduler", (ValueError, TypeError)):
            build_scheduler(optimizer, hparams.scheduler)


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


def _instantiate(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`; a failure becomes a ConfigError on the node at `path`.

    A ConfigError of the constructor gets the node's path in front of its key. Any other error
    (a library refusing a value reglab does not check itself) names the node, with its message.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        config_error = find_config_error(error)
        if config_error is not None:
            raise config_error.under(path) from None
        raise ConfigError(path, first_line(error.__cause__ or error)) from None


def _instantiate_all(group: DictConfig | None, path: str) -> list:
    """Instantiate every entry of a `name: {_target_: ...}` mapping; null entries are skipped."""
    if not group:
        return []
    return [
        _instantiate(node, f"{path}.{name}")
        for name, node in group.items()
        if node and "_target_" in node
    ]


def summarize(cfg: DictConfig, fit: dict[str, Any], started: float) -> dict[str, Any]:
    """The run's record for metrics.json (`objective` is the value of `optimized_metric`)."""
    history: EpochHistory = fit["history"]
    best = history.best(cfg.monitor, cfg.monitor_mode)
    summary = {
        "status": "ok",
        "task_name": cfg.task_name,
        "tags": list(cfg.get("tags") or []),
        "overrides": job_overrides(),
        "seed": cfg.seed,
        "monitor": cfg.monitor,
        "monitor_mode": cfg.monitor_mode,
        "best_epoch": best["epoch"] if best else None,
        f"best_{cfg.monitor}": best.get(cfg.monitor) if best else None,
        "stopped_epoch": fit["stopped_epoch"],
        "stopping_reason": fit["stopping_reason"],
        "epochs_run": len(history.epochs),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "final": history.epochs[-1] if history.epochs else {},
        "best": best or {},
        "test": {name: float(value) for name, value in fit["test"].items()},
        "best_checkpoint": fit["best_checkpoint"],
        "versions": {
            "reglab": reglab.__version__,
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
        "config_digest": config_digest(cfg),
        "history": history.epochs,
    }
    summary["objective"] = _lookup(summary, cfg.get("optimized_metric"))
    return summary


def noisy_input_metrics(datamodule: L.LightningDataModule) -> dict[str, float]:
    """For denoising data, the MSE of returning the noisy input unchanged (`val/mse`,
    `test/mse`, in the loss's units): the score a denoiser must beat. Empty for other data."""
    noisy = getattr(datamodule, "noisy_input_mse", None) or {}
    return {f"{split}/mse": float(value) for split, value in noisy.items()}


def config_digest(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config with the run's own paths blanked: equal configs, equal digests."""
    return digest(neutral_config(cfg))


@rank_zero_only
def _write_outputs(cfg: DictConfig, trainer: L.Trainer, summary: dict[str, Any]) -> None:
    output_dir = Path(cfg.paths.output_dir)
    write_record(output_dir, summary)  # last and atomic: a metrics.json is a finished run's
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # The HPARAMS row: what this run set and its main knobs, beside its final metrics.
            write_hparams(logger, cfg, summary, trainer.global_step)
        logger.finalize("success")
    _log_stopping(cfg, summary)  # a sweep job's or search trial's: train.log
    if in_multirun():  # one line per job: which, status, objective, time
        objective = summary["objective"]
        value = f"{cfg.optimized_metric}={objective:.4g}, " if objective is not None else ""
        log.info(f"reglab: job {output_dir.name}: ok, {value}{summary['wall_time_s']:.1f}s")
        return
    # A search trial's: train.log (Optuna's line per trial is on the console).
    log.run_info(_result_line(summary) + f"; outputs in {output_dir}")


def _result_line(summary: dict[str, Any]) -> str:
    """`reglab: 12 epochs in 3.4s, best epoch 7, test/loss=..., test/acc=...` (epochs from 1)."""
    return (
        f"reglab: {_plural(summary['epochs_run'], 'epoch')} in {summary['wall_time_s']:.1f}s, "
        f"best epoch {summary['best_epoch']}, "
        + ", ".join(f"{k}={v:.4f}" for k, v in summary["test"].items())
        + _noisy_input_text(summary.get("noisy_input") or {})
    )


def _log_stopping(cfg: DictConfig, summary: dict[str, Any]) -> None:
    """`reglab: early stopping at epoch 15 of 20: val/loss did not improve for 5 epochs; best
    epoch 10 (val/loss 0.1234)`, when early stopping ended the run."""
    if not summary.get("stopping_reason"):
        return
    limit = cfg.trainer.get("max_epochs")
    of = f" of {limit}" if isinstance(limit, int) and limit > 0 else ""
    best = summary[f"best_{cfg.monitor}"]
    at_best = f" ({cfg.monitor} {best:.4f})" if best is not None else ""
    log.run_info(
        f"reglab: early stopping at epoch {summary['stopped_epoch']}{of}: "
        f"{summary['stopping_reason']}; best epoch {summary['best_epoch']}{at_best}"
    )


def _report_unkept(cfg: DictConfig, summary: dict[str, Any]) -> None:
    """The last lines of a run that keeps nothing (debug=fdr, keep_outputs=false): its result,
    and no folder (it is gone)."""
    _log_stopping(cfg, summary)
    batches = cfg.trainer.get("fast_dev_run")
    if not batches:
        log.run_info(_result_line(summary) + "; nothing kept")
        return
    batches = int(batches)  # fast_dev_run: true is one batch
    every = {**summary["final"], **summary["test"]}
    losses = [f"{split}/loss" for split in ("train", "val", "test")]
    shown = ", ".join(f"{name}={every[name]:.4f}" for name in losses if name in every)
    log.run_info(
        f"reglab: fast_dev_run ok: {batches} batch{'es' if batches > 1 else ''} of train, val "
        f"and test ({shown}); nothing kept"
    )


def _noisy_input_text(noisy_input: dict[str, float]) -> str:
    test = {k: v for k, v in noisy_input.items() if k.startswith("test/")}
    if not test:
        return ""
    return (
        " (the noisy input unchanged: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items()) + ")"
    )


@rank_zero_only
def _remove_outputs(output_dir: Path, before: Before) -> None:
    before.remove_new(output_dir)


def _lookup(summary: dict[str, Any], name: str | None) -> float | None:
    """`best/val/loss` -> summary['best']['val/loss']; `test/acc` -> summary['test']['test/acc']."""
    if not name:
        return None
    section, _, metric = name.partition("/")
    if section in ("best", "final") and metric in summary[section]:
        return summary[section][metric]
    if name in summary["test"]:
        return summary["test"][name]
    raise ConfigError(
        "optimized_metric",
        f"{name!r} was not logged; available: "
        + ", ".join([*(f"best/{k}" for k in summary["best"]), *summary["test"]]),
    )
