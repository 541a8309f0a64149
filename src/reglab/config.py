"""Config checks that run before anything is built, and the config tree printed at start.

This is the config layer: it knows where each value sits, so its errors name full keys
(`trainer.precision`); the classes built from the config name only their own arguments.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from reglab import checks
from reglab.errors import ConfigError
from reglab.log import rank_zero_only  # Lightning's, its rank set without importing Lightning
from reglab.names import strategy_names
from reglab.targets import escape

# Config groups whose option is one callback that acts on training (an empty option: nothing).
CONTROL_GROUPS = ("regularization", "dropout", "batchnorm", "augmentation", "early_stopping")
MONITOR_MODES = ("auto", "min", "max")
# Which way a validation metric improves, by the last part of its name (val/acc -> acc).
IMPROVES_UPWARD = ("acc", "f1", "r2", "mc_acc")
IMPROVES_DOWNWARD = ("loss", "mse", "mae", "mc_loss", "mc_entropy", "mc_spread")
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


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming the key for values that would only fail later, mid-run.

    Also settles `monitor_mode: auto` to the direction the monitored metric improves in.
    """
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
    stopper = cfg.get("early_stopping")
    if stopper and "_target_" in stopper:  # Lightning's EarlyStopping does not check these
        checks.integer("early_stopping.patience", stopper.get("patience", 3))
        checks.number("early_stopping.min_delta", stopper.get("min_delta", 0.0), 0.0)


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
    name = monitor.rsplit("/", 1)[-1]
    natural = "max" if name in IMPROVES_UPWARD else "min" if name in IMPROVES_DOWNWARD else None
    if mode == "auto":
        if natural is None:
            raise ConfigError(
                "monitor",
                f"{monitor!r} is not a metric reglab logs ({', '.join(IMPROVES_UPWARD + IMPROVES_DOWNWARD)} "
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
    if not (devices in ("auto", -1) or OmegaConf.is_list(devices) or counted):
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
