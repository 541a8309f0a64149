"""Config checks that run before anything is built, and the config tree printed at start."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree

from reglab import checks
from reglab.errors import ConfigError

MONITOR_MODES = ("min", "max")
PRINT_ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` naming the key for values that would only fail later, mid-run."""
    if not isinstance(cfg.get("seed"), int):
        raise ConfigError("seed", f"must be an integer, got {cfg.get('seed')!r}")
    if cfg.get("monitor_mode") not in MONITOR_MODES:
        raise ConfigError(
            "monitor_mode", f"got {cfg.get('monitor_mode')!r}; valid: {', '.join(MONITOR_MODES)}"
        )
    if not str(cfg.get("monitor", "")).startswith("val/"):
        raise ConfigError(
            "monitor", f"must be a validation metric (val/...), got {cfg.get('monitor')!r}"
        )
    for key in ("data", "model", "trainer"):
        if not cfg.get(key):
            raise ConfigError(key, "is missing; choose an option of that config group")
    trainer = cfg.trainer
    # Lightning accepts these and fails mid-run (accumulate 0: ZeroDivisionError) or never.
    checks.integer("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1)
    checks.integer("trainer.num_sanity_val_steps", trainer.get("num_sanity_val_steps", 2), -1)
    if trainer.get("gradient_clip_val") is not None:
        checks.number("trainer.gradient_clip_val", trainer.gradient_clip_val, 0.0)
    stopper = cfg.get("early_stopping")
    if stopper and "_target_" in stopper:  # Lightning's EarlyStopping does not check these
        checks.integer("early_stopping.patience", stopper.get("patience", 3))
        checks.number("early_stopping.min_delta", stopper.get("min_delta", 0.0), 0.0)


@rank_zero_only
def print_config(cfg: DictConfig) -> None:
    """Print the composed config as a tree, one branch per group."""
    tree = Tree("config", guide_style="dim")
    keys = [k for k in PRINT_ORDER if k in cfg] + [k for k in cfg if k not in PRINT_ORDER]
    for key in keys:
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        tree.add(key).add(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    Console().print(tree)
