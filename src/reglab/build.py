"""Build what a run trains from its config: data module, LightningModule, controls, trainer.

Every object of a run comes from one config node (`data`, `model`, `optimizer`, `scheduler`, the
control groups `regularization`/`dropout`/`augmentation`/..., `callbacks`, `logger`, `trainer`),
each checked as it is built: a bad value is one ConfigError naming its key under the node
(`config_path`), before any training. A run (`reglab.run`), a search's check of its first trial
(`reglab.search`) and an eval (`reglab.evaluate`) build through here; none reaches into a run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from hydra import utils as hydra_utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from reglab import checks
from reglab.callbacks import Control, EpochLines, epoch_bar
from reglab.config import CONTROL_GROUPS, plain
from reglab.errors import ConfigError, find_config_error, first_line
from reglab.module import RegLabModule, check_label_smoothing
from reglab.optim import build_optimizer, build_scheduler, check_optimizer, check_scheduler


def build_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, RegLabModule]:
    """The data module and the LightningModule sized to it; optimizer and scheduler checked."""
    datamodule = instantiate(cfg.data, "data")
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
        group: instantiate(cfg[group], group)
        for group in CONTROL_GROUPS
        if cfg.get(group) and "_target_" in cfg[group]
    }
    for group, control in controls.items():
        if isinstance(control, Control):
            with config_path(group):
                control.check(model)
    return controls


def build_trainer(
    cfg: DictConfig, first: list[L.Callback], last: list[L.Callback], show_progress: bool
) -> L.Trainer:
    """`cfg.trainer` with the callbacks `first`, the `callbacks` group's, `last`, and the progress
    display (one line per epoch off a terminal, else Lightning's bar counting epochs from 1);
    the `logger` group's loggers."""
    callbacks = [*first, *instantiate_all(cfg.get("callbacks"), "callbacks"), *last]
    if show_progress:
        callbacks.append(epoch_bar() if sys.stdout.isatty() else EpochLines())
    loggers = instantiate_all(cfg.get("logger"), "logger")
    return instantiate(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        enable_progress_bar=show_progress,
    )


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


def instantiate(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`; a failure becomes a ConfigError on the node at `path`.

    A ConfigError of the constructor gets the node's path in front of its key. Any other error
    (a library refusing a value reglab does not check itself) names the node, with its message.
    """
    try:
        return hydra_utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        config_error = find_config_error(error)
        if config_error is not None:
            raise config_error.under(path) from None
        raise ConfigError(path, first_line(error.__cause__ or error)) from None


def instantiate_all(group: DictConfig | None, path: str) -> list:
    """Instantiate every entry of a `name: {_target_: ...}` mapping; null entries are skipped."""
    if not group:
        return []
    return [
        instantiate(node, f"{path}.{name}")
        for name, node in group.items()
        if node and "_target_" in node
    ]
