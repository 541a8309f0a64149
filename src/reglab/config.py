"""Config checks that run before anything is built, and the config tree printed at start.

This is the config layer: it knows where each value sits, so its errors name full keys
(`trainer.precision`); the classes built from the config name only their own arguments.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

import reglab.tasks  # noqa: F401 - registers the built-in tasks, which declare their metrics
from reglab import checks
from reglab.errors import ConfigError
from reglab.log import rank_zero_only  # Lightning's, its rank set without importing Lightning
from reglab.metric_directions import improves_toward
from reglab.metric_directions import names as metric_names
from reglab.names import (
    CONTROL_GROUPS,  # noqa: F401 - build, summary and the report read it here
    TRAINER_ARGUMENTS,
    strategy_names,
)
from reglab.targets import escape

MONITOR_MODES = ("auto", "min", "max")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISIONS = (
    "16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true",
    "16", "32", "64", "bf16", "transformer-engine", "transformer-engine-float16",
)  # fmt: skip
# Modules whose classes and functions a config's `_target_` may name, so that a shared config file
# cannot call `builtins.open` or `os.system`; the config's own `plugins` modules are added, and
# `+reglab.allow_any_target=true` on the command line lifts the check.
TARGET_MODULES = ("torch.optim", "lightning", "reglab")
ALLOW_ANY_TARGET = "reglab.allow_any_target"
# What reads a model node's keys: the builder reads these; every other key is a knob (width,
# depth, ...) that something must read through an interpolation, `${model.width}` in `layers`
# or `${oc.select:model.lr,...}` in the optimizer. A key nothing reads is a typo (`+model.foo=1`).
MODEL_BUILDER_KEYS = ("layers", "init", "head")
_MODEL_REFERENCE = re.compile(r"(?<![\w.])model\.([A-Za-z_]\w*)")
TRAINER_TARGETS = ("lightning.pytorch.Trainer", "lightning.Trainer", "pytorch_lightning.Trainer")
# Groups whose node is one callback (or scheduler): an option without `_target_` (none) builds
# nothing, so a key set there is read by nothing. (regularization=none keeps the shared knobs on
# purpose: a sweep over regularization=none,l1 sets them for every option.)
BUILT_ONLY_WITH_TARGET = ("scheduler", "dropout", "batchnorm", "augmentation", "early_stopping")
# Switches read as true/false: 'maybe' or 'no' would count as true. (trainer.deterministic also
# takes 'warn'.)
BOOLEAN_KEYS = (
    "print_config", "keep_outputs", "log_every_step", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.enable_checkpointing", "trainer.benchmark",
    "trainer.inference_mode", "trainer.use_distributed_sampler", "trainer.detect_anomaly",
    "trainer.barebones", "trainer.sync_batchnorm", "data.shuffle", "data.standardize",
    "data.standardize_target", "augmentation.log_images", "early_stopping.check_finite",
    "early_stopping.verbose", "batchnorm.freeze_affine", "optimizer.nesterov",
    "optimizer.amsgrad", "optimizer.maximize",
)  # fmt: skip
# Keys of each `logger` entry that name a folder under the run folder.
LOGGER_FOLDER_KEYS = ("name", "version", "sub_dir")
PRINT_ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def plain(node: Any) -> Any:
    """OmegaConf node -> plain dicts/lists (checkpoints reload with `weights_only=True`)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def neutral_config(cfg: DictConfig | dict, *, blank_seed: bool = False) -> dict[str, Any]:
    """The resolved config with the run's own paths (and with `blank_seed` the seed) blanked.

    Blanked before resolving, so values that follow them (`data.shuffle_seed: ${seed}`) are
    blanked too: configs that differ only there compare equal.
    """
    neutral = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg.copy()
    for key in neutral.get("paths") or {}:
        neutral.paths[key] = f"<{key}>"
    if blank_seed:
        neutral.seed = "<seed>"
    return OmegaConf.to_container(neutral, resolve=True)


def digest(plain_config: Any) -> str:
    """SHA-256 of a plain config, independent of key order."""
    text = json.dumps(plain_config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_interpolations(cfg: DictConfig) -> None:
    """A `${key}` naming a key the config lacks (`model=resnet '~model.channels'`): one line
    naming the value that refers to it, not OmegaConf's traceback from deep inside a build."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as error:
        message = str(error).splitlines()[0]
        raise ConfigError(
            error.full_key or "", f"{message}; set it or remove the reference"
        ) from None


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming the key for values that would only fail later, mid-run.

    Also settles `monitor_mode: auto` to the direction the monitored metric improves in.
    """
    check_interpolations(cfg)
    checks.folder_name("task_name", cfg.get("task_name"))
    check_targets(cfg)
    checks.seed("seed", cfg.get("seed"))
    if not str(cfg.get("monitor", "")).startswith("val/"):
        raise ConfigError(
            "monitor", f"must be a validation metric (val/...), got {cfg.get('monitor')!r}"
        )
    cfg.monitor_mode = monitor_mode(cfg.monitor, cfg.get("monitor_mode", "auto"))
    for key in ("data", "model", "trainer"):
        if not cfg.get(key):
            raise ConfigError(key, "is missing; choose an option of that config group")
    validate_trainer(cfg.trainer)
    check_model_keys(cfg)
    check_switches(cfg)
    check_lists(cfg)
    check_built_groups(cfg)
    stopper = cfg.get("early_stopping")
    # Lightning's EarlyStopping does not check these. (Its mode is `monitor_mode`: if that is
    # left `auto` above, the run checks both.)
    if stopper and "_target_" in stopper and cfg.monitor_mode != "auto":
        validate_early_stopping(stopper, cfg.monitor)
    reg = cfg.get("regularization") or {}
    for key in ("include", "exclude"):  # a string would be read as one pattern per character
        patterns = reg.get(key)
        if patterns is not None and not (
            OmegaConf.is_list(patterns) and all(isinstance(p, str) for p in patterns)
        ):
            raise ConfigError(
                f"regularization.{key}",
                f"must be null or a list of glob patterns on parameter names "
                f"(regularization.{key}=[net.head.*]), got {patterns!r}",
            )


def check_model_keys(cfg: DictConfig) -> None:
    """Refuse a key of `model` that nothing reads (see MODEL_BUILDER_KEYS), naming the closest."""
    model = cfg.get("model")
    if not isinstance(model, DictConfig):
        return
    raw = OmegaConf.to_container(cfg, resolve=False)
    raw.pop("hydra", None)
    read = {*MODEL_BUILDER_KEYS, *_model_references(raw)}
    for key in model:
        if key not in read:
            raise ConfigError(
                f"model.{key}",
                "nothing reads this key: the builder reads layers, init and head, and a knob "
                f"only where an interpolation uses it (${{model.{key}}} in layers)"
                + checks.closest(key, read, "model"),
            )


def _model_references(node: Any) -> Iterator[str]:
    """The model keys that interpolations anywhere in the plain config `node` read."""
    if isinstance(node, dict):
        for child in node.values():
            yield from _model_references(child)
    elif isinstance(node, list):
        for child in node:
            yield from _model_references(child)
    elif isinstance(node, str) and "${" in node:
        yield from _MODEL_REFERENCE.findall(node)


def check_switches(cfg: DictConfig) -> None:
    """Each of BOOLEAN_KEYS that is set (and each logger's `log_graph`) is true or false."""
    keys = list(BOOLEAN_KEYS)
    logger = cfg.get("logger")
    if isinstance(logger, DictConfig):
        keys += [f"logger.{name}.{key}" for name in logger for key in ("log_graph",)]
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            checks.boolean(key, value)
    deterministic = cfg.trainer.get("deterministic")
    if deterministic is not None and deterministic != "warn":
        checks.boolean("trainer.deterministic", deterministic)


def check_lists(cfg: DictConfig) -> None:
    """`tags` and `plugins` are lists; `callbacks` and `logger` map names to `{_target_: ...}`."""
    for key, example in (("tags", "tags=[baseline,l2]"), ("plugins", "plugins=[my_lab.layers]")):
        value = cfg.get(key)
        if value is not None and not OmegaConf.is_list(value):
            raise ConfigError(key, f"must be a list ({example}), got {value!r}")
    for group in ("callbacks", "logger"):
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(group, f"must map names to {{_target_: ...}} entries, got {node!r}")
        for name in node:
            entry = node.get(name)
            if entry is not None and not (isinstance(entry, DictConfig) and "_target_" in entry):
                raise ConfigError(
                    f"{group}.{name}",
                    f"must be null or a mapping with a _target_ (the class to build), got {entry!r}",
                )
            if group == "logger" and entry is not None:
                for key in LOGGER_FOLDER_KEYS:  # under the run folder: no `..`, no absolute path
                    if entry.get(key) not in (None, ""):
                        checks.folder_name(
                            f"logger.{name}.{key}", entry.get(key), "a folder in the run folder"
                        )


def check_built_groups(cfg: DictConfig) -> None:
    """A key set in an option of BUILT_ONLY_WITH_TARGET that builds nothing (`none`) is refused."""
    for group in BUILT_ONLY_WITH_TARGET:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and len(node) and "_target_" not in node:
            key = next(iter(node))
            raise ConfigError(
                f"{group}.{key}",
                f"this {group} option builds nothing, so nothing reads it; choose one that does "
                f"({group}=<option>) before setting its keys",
            )


def validate_early_stopping(stopper: DictConfig, monitor: str) -> None:
    """Values Lightning's EarlyStopping takes and then fails on mid-run, or stops on wrongly."""
    checks.integer("early_stopping.patience", stopper.get("patience", 3))
    checks.number("early_stopping.min_delta", stopper.get("min_delta", 0.0), 0.0)
    for key in ("stopping_threshold", "divergence_threshold"):
        if stopper.get(key) is not None:
            checks.number(f"early_stopping.{key}", stopper.get(key))
    mode = checks.choice("early_stopping.mode", stopper.get("mode", "min"), ("min", "max"))
    watched = stopper.get("monitor", monitor)
    natural = improves_toward(str(watched))
    if watched == monitor and natural is None:  # a metric of the user's own, with monitor_mode
        return
    if natural is None and str(watched).startswith(("val/", "train/")) and controls_unloaded():
        return  # perhaps a control's metric: the run checks it again once they are imported
    if natural is None or not str(watched).startswith(("val/", "train/")):
        raise ConfigError(
            "early_stopping.monitor",
            f"{watched!r} is not a metric reglab logs (val/ or train/ + "
            f"{', '.join(metric_names())}); it would fail mid-run",
        )
    if mode != natural:
        raise ConfigError(
            "early_stopping.mode",
            f"{watched} improves toward {natural}, got {mode!r}: it would stop on improvement",
        )


def controls_unloaded() -> bool:
    """Whether the controls are not imported yet, so their metrics' directions are not declared.

    Metric directions are declared by the code that logs them (reglab.metric_directions): a
    task's with the task, a control's (MC dropout's val/mc_acc) when reglab.callbacks is
    imported. train.py's early check runs before that; a name it does not know is left to the
    run's check, which answers the same once they are.
    """
    return "reglab.callbacks" not in sys.modules


def check_targets(cfg: DictConfig) -> None:
    """Refuse a `_target_` anywhere in the job config outside the allowed modules."""
    if allow_any_target(cfg):
        return
    allowed = target_modules(cfg.get("plugins") or [])
    # The object a target reaches is checked once torch is imported (every run, evaluation and
    # search imports it before building anything): resolving imports the target's module, and a
    # bad value before a run answers without torch (train.py, tests/test_startup.py).
    resolve = "torch" in sys.modules
    for key, target in targets(cfg):
        if not isinstance(target, str) or not any(
            target == module or target.startswith(f"{module}.") for module in allowed
        ):
            raise ConfigError(
                key,
                f"{target!r} is outside the modules a config may call ({', '.join(allowed)}); "
                f"name your module in plugins, or pass +{ALLOW_ANY_TARGET}=true",
            )
        escaped = escape(target, allowed) if resolve else None
        if escaped:  # `reglab.module.torch.save` -> torch.save: through module attributes
            raise ConfigError(
                key,
                f"{target!r} {escaped}; a config may call classes and functions defined in "
                f"{', '.join(allowed)}; name your module in plugins, or pass "
                f"+{ALLOW_ANY_TARGET}=true",
            )


def target_modules(plugins: Any) -> tuple[str, ...]:
    """TARGET_MODULES and the user's own `plugins` modules (not the standard library's: `os`)."""
    own = [str(name) for name in plugins if str(name).split(".")[0] not in sys.stdlib_module_names]
    return (*TARGET_MODULES, *own)


def allow_any_target(cfg: DictConfig) -> bool:
    """Whether `reglab.allow_any_target` is true; in a Hydra run only the command line may set it.

    A config file that sets it would defeat the check it is about.
    """
    node = cfg.get("reglab") or {}
    for key in node:
        checks.choice(f"reglab.{key}", key, ["allow_any_target"])
    allowed = node.get("allow_any_target", False)
    if not isinstance(allowed, bool):
        raise ConfigError(ALLOW_ANY_TARGET, f"must be true or false, got {allowed!r}")
    if allowed and HydraConfig.initialized():
        given = [o.lstrip("+").partition("=")[0] for o in HydraConfig.get().overrides.task]
        if not {"reglab", ALLOW_ANY_TARGET} & set(given):
            raise ConfigError(
                ALLOW_ANY_TARGET, f"only the command line may set it (+{ALLOW_ANY_TARGET}=true)"
            )
    return allowed


def targets(cfg: DictConfig) -> Iterator[tuple[str, Any]]:
    """(full key, value) of every `_target_` in the job config (Hydra's own `hydra` node aside)."""
    raw = OmegaConf.to_container(cfg, resolve=False)  # resolving all of it may need Hydra's run
    raw.pop("hydra", None)
    for key, path, target in _raw_targets(raw, "", ""):
        if isinstance(target, str) and "${" in target:  # an interpolation: what it resolves to
            target = OmegaConf.select(cfg, path, throw_on_resolution_failure=False)
        yield key, target


def _raw_targets(node: Any, key: str, path: str) -> Iterator[tuple[str, str, Any]]:
    """(display key `a.b[0]._target_`, select path `a.b.0._target_`, raw value), in file order."""
    if isinstance(node, dict):
        children = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return
    for name, child in children:
        child_key = f"{key}[{name}]" if isinstance(name, int) else f"{key}.{name}".lstrip(".")
        child_path = f"{path}.{name}".lstrip(".")
        if name == "_target_":
            yield child_key, child_path, child
        else:
            yield from _raw_targets(child, child_key, child_path)


def monitor_mode(monitor: str, mode: str) -> str:
    """`min` or `max` for `monitor`: `auto` derives it; a mode against the metric is refused."""
    checks.choice("monitor_mode", mode, MONITOR_MODES)
    natural = improves_toward(monitor)
    if mode == "auto":
        if natural is None and controls_unloaded():
            return mode  # settled by the run's check (see controls_unloaded)
        if natural is None:
            raise ConfigError(
                "monitor",
                f"{monitor!r} is not a metric reglab logs ({', '.join(metric_names())} "
                "under val/); for a metric of your own set monitor_mode=min or max",
            )
        return natural
    if natural is not None and mode != natural:
        raise ConfigError(
            "monitor_mode",
            f"{monitor} improves toward {natural}, got {mode!r}: the best checkpoint would be "
            f"the worst; use {natural} or auto",
        )
    return mode


def validate_trainer(trainer: DictConfig) -> None:
    """Lightning accepts some of these and fails mid-run (accumulate 0), or with a vague message."""
    if trainer.get("_target_") in TRAINER_TARGETS:  # `+trainer.max_epoch=3`: a TypeError later
        for key in trainer:
            if key != "_target_" and key not in TRAINER_ARGUMENTS:
                raise ConfigError(
                    f"trainer.{key}",
                    "is not an argument of Lightning's Trainer"
                    + checks.closest(key, TRAINER_ARGUMENTS, "trainer"),
                )
    checks.integer("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1)
    checks.integer("trainer.num_sanity_val_steps", trainer.get("num_sanity_val_steps", 2), -1)
    checks.integer("trainer.num_nodes", trainer.get("num_nodes", 1), 1)
    checks.integer("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), 0)
    if trainer.get("gradient_clip_val") is not None:
        checks.number("trainer.gradient_clip_val", trainer.gradient_clip_val, 0.0)
    checks.choice(
        "trainer.gradient_clip_algorithm",
        trainer.get("gradient_clip_algorithm") or "norm",
        ["norm", "value"],
    )
    # Every run validates (monitor is a val/ metric) and tests: none of these may be empty.
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if trainer.get(key) is not None:
            checks.batches(f"trainer.{key}", trainer[key])
    if trainer.get("val_check_interval") is not None:
        checks.batches("trainer.val_check_interval", trainer.val_check_interval)
    _check_epochs(trainer)
    checks.choice("trainer.precision", str(trainer.get("precision", "32-true")), PRECISIONS)
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, str):
        checks.choice("trainer.strategy", strategy, strategy_names(strategy))
    accelerator = checks.choice(
        "trainer.accelerator", trainer.get("accelerator", "auto"), ACCELERATORS
    )
    _check_accelerator_available(accelerator)
    devices = trainer.get("devices", "auto")
    counted = str(devices).isdigit() and int(devices) >= 1
    listed = OmegaConf.is_list(devices) and len(devices) > 0
    if not (devices in ("auto", -1) or listed or counted):
        raise ConfigError(
            "trainer.devices",
            f"must be auto, -1 (all), a count >= 1 or a list of device ids, got {devices!r}",
        )


def _check_epochs(trainer: DictConfig) -> None:
    """Epoch counts Lightning would accept and then train nothing, or never validate."""
    max_epochs = trainer.get("max_epochs")
    counted = isinstance(max_epochs, int) and not isinstance(max_epochs, bool) and max_epochs >= 1
    if not (max_epochs is None or max_epochs == -1 or counted):
        raise ConfigError(
            "trainer.max_epochs", f"must be an integer >= 1 (or -1: no limit), got {max_epochs!r}"
        )
    min_epochs = trainer.get("min_epochs")
    if min_epochs is not None:
        checks.integer("trainer.min_epochs", min_epochs, 0)
    checks.integer("trainer.max_steps", trainer.get("max_steps", -1), -1)
    every = trainer.get("check_val_every_n_epoch", 1)
    if every is not None:
        checks.integer("trainer.check_val_every_n_epoch", every, 1)
    limited = max_epochs is not None and max_epochs != -1
    if limited and min_epochs is not None and min_epochs > max_epochs:
        raise ConfigError(
            "trainer.min_epochs", f"{min_epochs} is more than trainer.max_epochs={max_epochs}"
        )
    if limited and every is not None and every > max_epochs:
        raise ConfigError(
            "trainer.check_val_every_n_epoch",
            f"{every} > trainer.max_epochs={max_epochs}: no epoch would be validated, "
            "and the monitored metric would never be logged",
        )


def _check_accelerator_available(accelerator: str) -> None:
    if accelerator not in ("gpu", "cuda"):
        return  # torch is imported only when it is asked about a GPU
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator", f"{accelerator!r} but no CUDA GPU is visible; use cpu or auto"
        )


@rank_zero_only
def print_config(cfg: DictConfig, file: Any = None) -> None:
    """Print the composed config as a tree, one branch per group (to `file`: plain text)."""
    if file is not None:  # the run folder's config_tree.txt: no rich (a tenth of a run's set-up)
        file.write(config_tree_text(cfg))
        return
    from rich.console import Console  # here: a config error answers without loading rich
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    for key, text in _branches(cfg):
        tree.add(key).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    Console().print(tree)


def config_tree_text(cfg: DictConfig) -> str:
    """The tree `print_config` prints, as plain text drawn with the same guides."""
    lines = ["config"]
    branches = _branches(cfg)
    for number, (key, text) in enumerate(branches):
        last = number == len(branches) - 1
        lines.append(("└── " if last else "├── ") + key)
        indent = "    " if last else "│   "
        lines += [indent + "    " + line for line in text.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def _branches(cfg: DictConfig) -> list[tuple[str, str]]:
    """(group, its resolved YAML) in print order."""
    # Resolved once (`OmegaConf.to_yaml` copies and resolves each branch again) and dumped by
    # libyaml where present: together half of what per-branch `to_yaml` took.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    keys = [k for k in PRINT_ORDER if k in cfg] + [k for k in cfg if k not in PRINT_ORDER]
    branches = []
    for key in keys:
        value = resolved[key]
        if isinstance(value, dict):
            text = yaml.dump(
                value, Dumper=dumper, default_flow_style=False, sort_keys=False, allow_unicode=True
            )
        else:
            text = str(value)
        branches.append((key, text))
    return branches
