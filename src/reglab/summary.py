"""What a run says and keeps: its header lines, its record (metrics.json), its last lines.

A run (`reglab.run`) prints a header before training (model, data, optimizer, the control groups,
the run folder), and after testing summarizes its history and test metrics into the record that
`metrics.json` keeps (`objective` is the value of `optimized_metric`), with the TensorBoard
HPARAMS row, the early-stopping line and the result line. A sweep job or search trial
(`log.set_one_of_many`) keeps these lines to train.log; a run that keeps nothing (debug=fdr,
keep_outputs=false) only prints its result.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

import reglab
from reglab import log
from reglab.callbacks import EpochHistory
from reglab.callbacks.weight_penalty import ignored_keys
from reglab.config import CONTROL_GROUPS, digest, neutral_config, print_config
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.records import write_record
from reglab.sweep import in_multirun, job_overrides
from reglab.tensorboard import write_hparams


def write_config_tree(cfg: DictConfig, output_dir: Path) -> None:
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
        # What the report leaves out when it compares runs (it imports no penalty code).
        "ignored_keys": ignored_keys(cfg),
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


@rank_zero_only
def write_outputs(cfg: DictConfig, trainer: L.Trainer, summary: dict[str, Any]) -> None:
    """metrics.json (last and atomic), the loggers' HPARAMS row, and the run's last lines."""
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


def report_unkept(cfg: DictConfig, summary: dict[str, Any]) -> None:
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


def _noisy_input_text(noisy_input: dict[str, float]) -> str:
    test = {k: v for k, v in noisy_input.items() if k.startswith("test/")}
    if not test:
        return ""
    return (
        " (the noisy input unchanged: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items()) + ")"
    )
