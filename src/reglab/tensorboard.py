"""What TensorBoard shows of a run: the curves first, a short HPARAMS row, a short run name.

TensorBoard's TIME SERIES and SCALARS tabs group tags by the word before the first `/`, order the
groups by character code (capitals before lower case) and open only the first two. `TensorBoard`,
the logger of conf/logger/tensorboard.yaml, is Lightning's TensorBoardLogger writing the `train/`
and `val/` metrics as `Train/...` and `Val/...`, so these two groups open first; `best/`, `epoch`,
`reg/`, `test/` follow and the monitors' `watch/` comes last. Only the event files see these
names: metrics.json, checkpoints, the console and other loggers keep `train/loss`. (TensorBoard's
tag filter ignores case: `train/loss` still finds them.)

`write_hparams` writes the run's HPARAMS row. `hparams(cfg)`: the keys its command line set and
the main knobs of each config group (which option, and its few values one compares), as plain
strings and numbers; no `_target_`, no path. A control group that builds nothing
(`regularization=none`) shows only its option, and the penalty's kind `none` and strength 0,
whatever inert knobs a sweep gave it, so the baseline row is found by either. Its metric columns
are `final_metrics(summary)`: the test metrics and the validation metrics at the best epoch.
TensorBoard's table shows five hparams at first, those marked as differing first, by name: the
command line's keys and the model and penalty are marked (`compared_keys`).

Lightning flushes the event file after every logging call; `TensorBoard` flushes at most every
FLUSH_SECONDS (and when the run ends), which a live TensorBoard, reloading every 30 s, cannot tell.

`run_name(num, overrides, swept)` names a sweep job by its number and the overrides that differ
between the sweep's jobs (`swept_keys(sweep_config)` of the sweep's multirun.yaml), not by every
override of the command line: TensorBoard names a run by its event folder's path, so the job
folder (hydra.sweep.subdir) takes this name.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, ListConfig, OmegaConf
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from typing_extensions import override

# The tag prefixes written capitalized, in the order TensorBoard shows them.
FIRST_GROUPS = {"train/": "Train/", "val/": "Val/"}

# Lightning flushes after every log call (about a millisecond an epoch); this is often enough.
FLUSH_SECONDS = 5.0

# Per config group: the keys that say what its option does, shown when the option sets them.
KNOBS = {
    "model": ("width", "depth", "channels", "activation", "norm", "dropout"),
    "data": ("batch_size", "label_noise", "train_fraction"),
    "optimizer": ("lr", "weight_decay", "momentum"),
    "scheduler": (),
    "regularization": ("kind", "strength", "method", "l1_ratio"),
    "constraint": ("kind", "max_value"),
    "dropout": ("schedule", "p"),
    "batchnorm": (),
    "augmentation": (),
    "early_stopping": (),
}
# Top-level keys every row shows.
RUN_KEYS = ("seed", "tags", "trainer.max_epochs")
# Shown in the table from the start, with the command line's keys.
COMPARED = ("model", "regularization", "regularization.strength")
# Command-line keys that do not change what a run computes (where it writes, what it prints).
NOT_COMPARED = (
    "paths",
    "hydra",
    "ckpt_path",
    "resume_sweep",
    "print_config",
    "keep_outputs",
    "callbacks",
    "logger",
    "plugins",
    "task_name",
    "trainer.enable_progress_bar",
)


class TensorBoard(TensorBoardLogger):
    """Lightning's TensorBoardLogger with `train/` and `val/` written first (module docstring)."""

    _last_flush: float | None = None

    @override
    def save(self) -> None:
        # The first call also writes hparams.yaml; finalize() flushes and closes in any case.
        now = time.monotonic()
        if self._last_flush is not None and now - self._last_flush < FLUSH_SECONDS:
            return
        self._last_flush = now
        super().save()

    @override
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({tag(name): value for name, value in metrics.items()}, step)

    @override
    def log_hyperparams(
        self,
        params: Any,
        metrics: Mapping[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        # The metric columns name the tags the metrics are written under.
        if metrics is not None:
            metrics = {tag(name): value for name, value in metrics.items()}
        super().log_hyperparams(params, metrics, step)


def tag(name: str) -> str:
    """The TensorBoard tag of the metric `name`: `train/loss` -> `Train/loss`, others the same."""
    for prefix, shown in FIRST_GROUPS.items():
        if name.startswith(prefix):
            return shown + name.removeprefix(prefix)
    return name


def write_hparams(
    logger: TensorBoardLogger, cfg: DictConfig, summary: Mapping[str, Any], step: int
) -> None:
    """The run's HPARAMS row and its final metrics (at `step`, the run's last) to `logger`."""
    row, metrics = hparams(cfg), final_metrics(summary)
    logger.log_hyperparams(row)  # kept in hparams.yaml; writes nothing to the event file
    logger.log_metrics(metrics, step)  # the scalars the metric columns read
    experiment, start, end = hparams_summaries(row, {tag(name): v for name, v in metrics.items()})
    mark_compared(experiment, compared_keys(row))
    writer = logger.experiment._get_file_writer()  # as Lightning's log_hyperparams writes them
    for summary_proto in (experiment, start, end):
        writer.add_summary(summary_proto, step)


def hparams(
    cfg: DictConfig,
    choices: Mapping[str, Any] | None = None,
    overrides: Sequence[str] | None = None,
) -> dict[str, str | float | int | bool]:
    """The run's HPARAMS row (module docstring).

    `choices` (group -> option) and `overrides` (the command line's `key=value`) default to
    Hydra's runtime choices and task overrides of this run or sweep job.
    """
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if choices is None:
        choices = dict(hydra.runtime.choices) if hydra else {}
    given = _override_values(_hydra_overrides() if overrides is None else overrides)
    row: dict[str, Any] = {}
    for key, text in given.items():
        value = OmegaConf.select(cfg, key, default=None)
        # A group's option (`model=cnn`) is its name, not its node.
        row[key] = (choices.get(key) or text) if isinstance(value, DictConfig) else value
    for group, knobs in KNOBS.items():
        if not _builds_something(cfg, group):  # knobs a sweep gave an inert option mean nothing
            row = {key: value for key, value in row.items() if not key.startswith(f"{group}.")}
        row |= _group_knobs(cfg, group, knobs, choices.get(group) or given.get(group))
    for key in RUN_KEYS:
        row[key] = OmegaConf.select(cfg, key, default=None)
    return {key: _plain_value(value) for key, value in sorted(row.items()) if not _is_path(value)}


def compared_keys(row: Mapping[str, Any], overrides: Sequence[str] | None = None) -> set[str]:
    """The keys of `row` the table shows first: the command line's and COMPARED."""
    given = _override_values(_hydra_overrides() if overrides is None else overrides)
    return {key for key in row if key in given or key in COMPARED}


def mark_compared(experiment: Any, keys: set[str]) -> None:
    """Mark `keys` as differing in an hparams experiment summary: TensorBoard shows them first."""
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in keys
    value.metadata.plugin_data.content = data.SerializeToString()


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _override_values(overrides: Sequence[str]) -> dict[str, str]:
    """Key -> value as typed, of the overrides that say what a run computes (`+a.b=1` -> `a.b`).

    Deletions and the keys of NOT_COMPARED (where the run writes, what it prints) are left out.
    """
    given = {}
    for item in overrides:
        key, _, text = item.partition("=")
        key = key.lstrip("+").partition("@")[0]
        if key.startswith("~") or not key:
            continue
        if not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_COMPARED):
            given[key] = text
    return given


def _group_knobs(cfg: DictConfig, group: str, knobs: Sequence[str], choice: Any) -> dict[str, Any]:
    """`group: option` and the group's knobs its option sets (module docstring)."""
    node = cfg.get(group)
    option = choice if choice is not None else _option_name(node)
    row = {group: option}
    if not _builds_something(cfg, group):
        return row | _inert_knobs(group)
    for knob in knobs:
        value = OmegaConf.select(node, knob, default=None)
        if value is not None:
            row[f"{group}.{knob}"] = value
    return row


def _option_name(node: Any) -> str:
    """An option's name where Hydra's choices are not known: its class, or `none` if empty."""
    if isinstance(node, DictConfig) and "_target_" in node:
        return str(node._target_).rpartition(".")[2].lower()
    return "none" if not node else "?"


def _builds_something(cfg: DictConfig, group: str) -> bool:
    """Whether the group's option acts (a control group without `_target_` builds nothing)."""
    node = cfg.get(group)
    if group in ("model", "data", "optimizer"):
        return bool(node)
    return isinstance(node, DictConfig) and "_target_" in node


def _inert_knobs(group: str) -> dict[str, Any]:
    """A group that builds nothing shows its option and: no penalty is kind none, strength 0."""
    if group == "regularization":
        return {"regularization.kind": "none", "regularization.strength": 0.0}
    return {}


def _plain_value(value: Any) -> str | float | int | bool:
    """A value TensorBoard's table shows: numbers and booleans as they are, others as text."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _is_path(value: Any) -> bool:
    """Absolute paths stay out of the table (they name a machine's folders, not a setting)."""
    return isinstance(value, str) and Path(value).is_absolute()


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The HPARAMS metric columns: the test metrics and the validation metrics at the best epoch."""
    best = {f"best/{k}": v for k, v in summary["best"].items() if k.startswith("val/")}
    return {**summary["test"], **best}


def swept_keys(sweep_config: DictConfig | Mapping[str, Any]) -> set[str]:
    """The keys a sweep gives more than one value: its command line's and its config's sweeps.

    `sweep_config` is the sweep's multirun.yaml (Hydra writes it into the sweep folder before the
    first job): its `hydra.overrides.task` is the command line, `hydra.sweeper.params` the
    sweep an experiment config sets.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = (
        OmegaConf.create(sweep_config) if not isinstance(sweep_config, DictConfig) else sweep_config
    )
    command_line = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
    params = OmegaConf.select(config, "hydra.sweeper.params", default={}) or {}
    items = [*(f"{k}={v}" for k, v in params.items()), *command_line]
    parsed = OverridesParser.create().parse_overrides(items)
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def run_name(num: int, overrides: Sequence[str], swept: Set[str]) -> str:
    """A sweep job's name: its number and the overrides that differ between jobs.

    `3_regularization=l1,seed=2` rather than `3_early_stopping=none,model=mlp,...,seed=2`; a job
    of a sweep without a swept key is its number alone.
    """
    differing = [o for o in overrides if o.partition("=")[0].lstrip("+") in swept]
    return f"{num}_{','.join(differing)}" if differing else str(num)
