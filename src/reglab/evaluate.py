"""Test a trained checkpoint again: `python eval.py ckpt_path=<run folder or checkpoint file>`.

A run folder means its best checkpoint, the one the run tested. The data, model and trainer are
the training run's own (`<run folder>/.hydra/config.yaml`, the folder above the checkpoint's
`checkpoints/`), so nothing of the training command has to be repeated and the test reproduces
the run's test metrics exactly. Overrides on the eval command line apply on top of the run's
config (`data.batch_size=256`, `trainer.precision=64-true`); `dropout=mc` (`dropout.samples=50`)
adds the Monte-Carlo dropout metrics. The results go to `eval_metrics.json` in the eval's own
folder (outputs/eval/<date>/<time>), written atomically.

The console says which checkpoint is tested and its epoch, counted from 1 as metrics.json's
`best_epoch` (`reglab: testing <file> (epoch 7)`), then the result; the progress bar shows only
on a terminal.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import reglab
from reglab import checkpoint, log
from reglab.build import build_controls, build_data_and_model, instantiate
from reglab.callbacks import MCDropout
from reglab.callbacks.history import FIRST_EPOCH
from reglab.config import print_config, validate
from reglab.errors import ConfigError, first_line
from reglab.module import RegLabModule
from reglab.plugins import import_plugins

EVAL_RECORD = "eval_metrics.json"
RUN_CONFIG = Path(".hydra") / "config.yaml"  # what Hydra saved when the run started
# What the training run's config decides for the test; its other keys (regularization, early
# stopping, callbacks, loggers) act on training only. The eval's own config sets the rest:
# task_name, tags, ckpt_path, paths, dropout.
RUN_KEYS = (
    "seed",
    "plugins",
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "monitor",
    "monitor_mode",
    "log_every_step",
)
_ABSENT = object()  # OmegaConf.select's answer for a key the eval config does not have


def evaluate(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Test the checkpoint `cfg.ckpt_path` names; write and return the eval record.

    `overrides` are the eval command line's (Hydra's `overrides.task`): those apply on top of the
    training run's config, the rest of the eval config's placeholders do not.
    """
    started = time.perf_counter()
    log.route_library_logs()
    file = checkpoint_file(cfg)
    saved = checkpoint.read_checkpoint(file)  # a damaged file is refused before anything else
    run_dir = run_of(file)
    job = eval_config(cfg, load_run_config(run_dir), overrides)
    if job.get("print_config"):
        print_config(job)
    trainer, model, datamodule = prepare(job, saved)
    epoch = tested_epoch(saved)
    log.info(f"reglab: testing {file}" + (f" (epoch {epoch})" if epoch is not None else ""))
    results = trainer.test(model, datamodule=datamodule, verbose=False)
    mc = [c for c in trainer.callbacks if isinstance(c, MCDropout)]
    record = {
        "status": "ok",
        "task_name": job.task_name,
        "ckpt_path": str(file.resolve()),
        "run_dir": str(run_dir.resolve()),
        "checkpoint": {**checkpoint.describe(saved), "epoch": epoch},
        "overrides": list(overrides),
        "seed": job.seed,
        "mc_samples": mc[0].samples if mc else None,
        "test": {name: float(value) for name, value in (results[0] if results else {}).items()},
        "wall_time_s": round(time.perf_counter() - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "versions": {
            "reglab": reglab.__version__,
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
    }
    _write_record(Path(job.paths.output_dir), record)
    return record


def tested_epoch(saved: dict) -> int | None:
    """The epoch a checkpoint holds, counted from 1 as metrics.json counts (Lightning's `epoch`
    key is 0-based); None if it has none."""
    epoch = saved.get("epoch")
    return epoch + FIRST_EPOCH if isinstance(epoch, int) else None


def prepare(job: DictConfig, saved: dict) -> tuple[L.Trainer, RegLabModule, L.LightningDataModule]:
    """The trainer, the model holding the checkpoint's weights, and the data, ready to test."""
    import_plugins(job.get("plugins") or [])
    validate(job)
    L.seed_everything(job.seed, workers=True)  # the run's seed: MC dropout draws repeat too
    datamodule, model = build_data_and_model(job)
    checkpoint.check_matches(saved, model)
    controls = build_controls(job, model)
    _check_only_mc_dropout(controls)
    trainer = _trainer(job, list(controls.values()))
    # The weights go into the module in the dtype it is tested in (64-true: float64), as training
    # tested them; loaded into the float32 module built above, they would be rounded first.
    model = trainer.precision_plugin.convert_module(model)
    model.load_state_dict(saved["state_dict"])
    return trainer, model, datamodule


def checkpoint_file(cfg: DictConfig) -> Path:
    """The checkpoint file `ckpt_path` names: a file, or a run folder's best checkpoint."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path",
            "is required: ckpt_path=<run folder> (tests its best checkpoint) or a .ckpt file",
        )
    given = Path(str(cfg.ckpt_path)).expanduser()
    if given.is_dir():
        if (given / "multirun.yaml").is_file():
            raise ConfigError(
                "ckpt_path", f"{str(given)!r} is a sweep folder; give one of its job folders"
            )
        if not (given / RUN_CONFIG).is_file():
            raise ConfigError(
                "ckpt_path", f"{str(given)!r} is not a run folder (it has no {RUN_CONFIG})"
            )
    return checkpoint.resolve(given, "best")


def run_of(file: Path) -> Path:
    """The run folder whose saved config built the checkpoint `file`."""
    run_dir = run_folder(file)
    if run_dir is None:
        raise ConfigError(
            "ckpt_path",
            f"{str(file)!r} is not in a run folder (<run>/checkpoints/<file> beside "
            f"<run>/{RUN_CONFIG}): eval.py builds the data and model from the run's config",
        )
    return run_dir


def run_folder(file: Path) -> Path | None:
    """The run folder a checkpoint file belongs to (`<run>/checkpoints/<file>`), or None."""
    for folder in (file.parent.parent, file.parent):
        if (folder / RUN_CONFIG).is_file():
            return folder
    return None


def load_run_config(run_dir: Path) -> DictConfig:
    """The config the run was started with, as Hydra saved it (interpolations unresolved)."""
    try:
        loaded = OmegaConf.load(run_dir / RUN_CONFIG)
    except Exception as error:  # noqa: BLE001 - any YAML or I/O failure: one line about the file
        message = f"cannot read {run_dir / RUN_CONFIG}: {first_line(error)}"
        raise ConfigError("ckpt_path", message) from None
    if not isinstance(loaded, DictConfig) or "model" not in loaded or "data" not in loaded:
        raise ConfigError("ckpt_path", f"{run_dir / RUN_CONFIG} is not a reglab run's config")
    return loaded


def eval_config(cfg: DictConfig, run_cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The run's RUN_KEYS, the eval config's own keys, then the eval command line's overrides.

    An override is applied by copying what it set in the composed eval config: `dropout=mc`
    copies the whole group, `data.batch_size=256` the one value into the run's data.
    """
    own = OmegaConf.to_container(cfg, resolve=False)
    run = OmegaConf.to_container(run_cfg, resolve=False)
    job = OmegaConf.create({**own, **{key: run[key] for key in RUN_KEYS if key in run}})
    for key in _overridden_keys(overrides):
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
        if value is _ABSENT:  # `~key`: deleted
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(job, parent) if parent else job
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(job, key, value, merge=False, force_add=True)
    return job


def _overridden_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys the overrides set, whole groups before keys inside them (`hydra.*` aside)."""
    keys = []
    for override in OverridesParser.create().parse_overrides(overrides=list(overrides)):
        key = override.key_or_group.split("/")[0]  # `group/sub=option` changes `group`
        if not key.startswith("hydra"):
            keys.append(key)
    return sorted(dict.fromkeys(keys), key=lambda k: k.count("."))


def _check_only_mc_dropout(controls: dict[str, L.Callback]) -> None:
    """Only MC dropout acts at test time; a training schedule chosen here would do nothing."""
    dropout = controls.get("dropout")
    if dropout is not None and not isinstance(dropout, MCDropout):
        raise ConfigError(
            "dropout", "eval.py takes dropout=mc (Monte-Carlo metrics) or none; this one trains"
        )


def _trainer(job: DictConfig, callbacks: list[L.Callback]) -> L.Trainer:
    """The run's trainer settings (precision, devices, test batch limits), for testing only."""
    return instantiate(
        job.trainer,
        "trainer",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        # Off a terminal (a log file, a batch job) the bar would be written as text.
        enable_progress_bar=bool(job.trainer.get("enable_progress_bar", True))
        and sys.stdout.isatty(),
    )


@rank_zero_only
def _write_record(output_dir: Path, record: dict[str, Any]) -> None:
    """eval_metrics.json, atomically (a temporary file renamed), and the one-line summary."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f"{EVAL_RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(output_dir / EVAL_RECORD)
    metrics = ", ".join(f"{name}={value:.4f}" for name, value in record["test"].items())
    log.info(f"reglab: {metrics}; outputs in {output_dir}")
