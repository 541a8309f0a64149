"""One experiment, top to bottom: config -> data -> net -> callbacks -> fit -> test -> metrics.json."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import time
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
from reglab.callbacks import EpochHistory
from reglab.config import print_config, validate
from reglab.errors import ConfigError, TrainingDiverged, find_config_error
from reglab.module import RegLabModule, check_optimization
from reglab.sweep import (
    error_summary,
    in_multirun,
    read_status,
    share_cores_between_parallel_jobs,
    write_failure,
    write_search_pointer,
)

# Config groups whose option is one callback that acts on training (empty option: nothing).
CONTROL_GROUPS = ("regularization", "dropout", "augmentation", "early_stopping")


def train(cfg: DictConfig) -> float | None:
    """Run one experiment from a composed config; return the value of `optimized_metric`.

    In a multirun a failing job is recorded (`status: failed`) instead of stopping the sweep, and
    with `+resume_sweep=<folder>` a job that already finished ok is skipped. With an
    `hparams_search` option the command runs an Optuna study instead (see reglab.search).
    """
    if cfg.get("hparams_search"):
        from reglab.search import run_search

        best = run_search(cfg)
        if in_multirun():
            write_search_pointer(Path(cfg.paths.output_dir), cfg, best)
        return best
    if not in_multirun():
        return run_one(cfg)
    share_cores_between_parallel_jobs()
    output_dir = Path(cfg.paths.output_dir)
    previous = read_status(output_dir)
    if cfg.get("resume_sweep") and previous and previous["status"] == "ok":
        print(f"reglab: skipping {output_dir.name}: already ok")
        return previous.get("objective")
    try:
        return run_one(cfg)
    except Exception as error:  # noqa: BLE001 - any job failure is recorded, the sweep goes on
        write_failure(output_dir, cfg, error)
        print(f"reglab: job {output_dir.name} failed: {error_summary(error)}")
        return None


def run_one(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> float | None:
    """One run: validate, build, fit, test on the best checkpoint, write metrics.json."""
    started = time.perf_counter()
    validate(cfg)
    if cfg.get("print_config", True):
        print_config(cfg)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = _instantiate(cfg.data)
    model = RegLabModule(
        model=_plain(cfg.model),
        input_shape=list(datamodule.input_shape),
        num_outputs=datamodule.num_outputs,
        task=datamodule.task,
        optimizer=_plain(cfg.optimizer),
        scheduler=_plain(cfg.get("scheduler")),
        monitor=cfg.monitor,
        log_every_step=cfg.get("log_every_step", False),
    )
    check_optimization(model)
    if cfg.monitor not in model.metric_names("val"):
        raise ConfigError(
            "monitor",
            f"{cfg.monitor!r} is not logged for {datamodule.task}; valid: "
            + ", ".join(model.metric_names("val")),
        )
    history = EpochHistory()
    controls = [_instantiate(cfg[g]) for g in CONTROL_GROUPS if cfg.get(g) and "_target_" in cfg[g]]
    callbacks = [
        history,
        *controls,
        *_instantiate_all(cfg.get("callbacks")),
        *(extra_callbacks or []),
    ]
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = _instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    # Read fit results now: testing on a checkpoint restores callback states (history, stopper).
    history = history.frozen()
    _raise_if_diverged(history.epochs, ("train/loss", cfg.monitor))
    stopper = trainer.early_stopping_callback
    stopped_epoch = stopper.stopped_epoch if stopper and stopper.stopped_epoch else None
    best_checkpoint = (
        trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    )
    test = trainer.test(
        model, datamodule=datamodule, ckpt_path=best_checkpoint or None, verbose=False
    )

    summary = _summary(
        cfg, history, stopped_epoch, test[0] if test else {}, best_checkpoint, started
    )
    summary["objective"] = _lookup(summary, cfg.get("optimized_metric"))
    if cfg.get("keep_outputs", True):
        _write_outputs(cfg, trainer, summary)
    else:
        _remove_outputs(Path(cfg.paths.output_dir))
    return summary["objective"]


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


def _plain(node: Any) -> Any:
    """OmegaConf node -> plain dicts/lists (checkpoints reload with `weights_only=True`)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`; a failure becomes a ConfigError naming the key it is about.

    A ConfigError that Hydra wrapped is re-raised as is. Any other error of the constructor
    (Lightning's Trainer refusing a precision, an unknown keyword, ...) names the node's key
    whose name appears in the message, or the node itself.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        config_error = find_config_error(error)
        if config_error is not None:
            raise config_error from None
        cause = error.__cause__ or error
        message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        node_key = node._get_full_key(None) or "config"  # e.g. "trainer", "logger.tensorboard"
        lowered = message.lower()
        named = [k for k in node if isinstance(k, str) and k != "_target_" and k in lowered]
        if (
            not named
            and "accelerator" in node
            and any(w in lowered for w in ("gpu", "cuda", "mps"))
        ):
            named = ["accelerator"]  # "No supported gpu backend found!"
        # The key the message names first is the one it is about ("devices=0 ... cpu accelerator").
        first = min(named, key=lowered.find) if named else None
        key = f"{node_key}.{first}" if first else node_key
        raise ConfigError(key, message) from None


def _instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every entry of a `name: {_target_: ...}` mapping; null entries are skipped."""
    if not group:
        return []
    return [_instantiate(node) for node in group.values() if node and "_target_" in node]


def _summary(
    cfg: DictConfig,
    history: EpochHistory,
    stopped_epoch: int | None,
    test: dict[str, float],
    best_checkpoint: str,
    started: float,
) -> dict[str, Any]:
    mode = cfg.get("monitor_mode", "min")
    best = history.best(cfg.monitor, mode)
    return {
        "status": "ok",
        "task_name": cfg.task_name,
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "seed": cfg.seed,
        "monitor": cfg.monitor,
        "monitor_mode": mode,
        "best_epoch": best["epoch"] if best else None,
        f"best_{cfg.monitor}": best.get(cfg.monitor) if best else None,
        "stopped_epoch": stopped_epoch,
        "epochs_run": len(history.epochs),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "final": history.epochs[-1] if history.epochs else {},
        "best": best or {},
        "test": {name: float(value) for name, value in test.items()},
        "best_checkpoint": best_checkpoint,
        "versions": {
            "reglab": reglab.__version__,
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
        "config_digest": config_digest(cfg),
        "history": history.epochs,
    }


def config_digest(cfg: DictConfig) -> str:
    """SHA-256 of the resolved config with the run's own paths blanked: equal configs, equal digests."""
    neutral = cfg.copy()
    for key in neutral.get("paths", {}):
        neutral.paths[key] = f"<{key}>"
    plain = OmegaConf.to_container(neutral, resolve=True)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()


@rank_zero_only
def _write_outputs(cfg: DictConfig, trainer: L.Trainer, summary: dict[str, Any]) -> None:
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Written last and atomically: a metrics.json is only ever a finished run's.
    tmp = output_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(output_dir / "metrics.json")
    final_metrics = {**summary["test"], **{f"best/{k}": v for k, v in summary["best"].items()}}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # The hparams table: this run's config next to its final metrics.
            logger.log_hyperparams(_flat_params(cfg), metrics=final_metrics)
        logger.finalize("success")
    print(
        f"reglab: {summary['epochs_run']} epochs in {summary['wall_time_s']:.1f}s, "
        f"best epoch {summary['best_epoch']}, "
        + ", ".join(f"{k}={v:.4f}" for k, v in summary["test"].items())
        + f"; outputs in {output_dir}"
    )


@rank_zero_only
def _remove_outputs(output_dir: Path) -> None:
    shutil.rmtree(output_dir, ignore_errors=True)


def _flat_params(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("paths", None)
    return plain


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
