"""One study, one experiment: each trial's config, checked before the first trial, and the
fixed config a study keeps.

A trial's config is the command's (its overrides) with the trial's drawn values, written into the
trial's folder; one is composed and built before any trial trains (`check_trial_config`), so a
bad value or an `optimized_metric` the task does not log fails once. A study records the fixed
part of its config (all but the searched keys, the seed and the keys that change only what a
run prints or keeps); a later command with another fixed config or `hparams_search.direction` is
refused, as its trials would be ranked against runs of a different experiment.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reglab.build import build_controls, build_data_and_model, check_optimized_metric
from reglab.config import digest, neutral_config, validate
from reglab.errors import ConfigError

# Study user attributes: the fixed config the study's trials ran with, and its digest.
FIXED_CONFIG_ATTR = "reglab_fixed_config"
FIXED_DIGEST_ATTR = "reglab_fixed_config_digest"
# Keys that change what a run prints or keeps, not its result: left out of the fixed config.
OUTPUT_ONLY_KEYS = (
    "hparams_search",
    "paths",
    "print_config",
    "tags",
    "logger",
    "keep_outputs",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
)


def check_trial_config(cfg: DictConfig, values: dict[str, Any], folder: Path) -> None:
    """Compose one trial's config and check it as a run would, before any trial trains.

    Also checks that `optimized_metric` names a metric this task logs: otherwise every trial
    would train and only then fail to find it.
    """
    trial_cfg = trial_config(values, folder)
    validate(trial_cfg)
    _, model = build_data_and_model(trial_cfg)
    controls = build_controls(trial_cfg, model)
    check_optimized_metric(trial_cfg.get("optimized_metric"), model, list(controls.values()))


def trial_config(values: dict[str, Any], trial_dir: Path) -> DictConfig:
    """The config of the command with the trial's values, writing into `trial_dir`."""
    return compose("train", overrides=[*trial_overrides(values), f"paths.output_dir={trial_dir}"])


def trial_overrides(values: dict[str, Any]) -> list[str]:
    """The command's overrides followed by the trial's values (the trial's .hydra/overrides.yaml)."""
    base = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return [*base, *(f"{k}={v}" for k, v in values.items())]


def fixed_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the searched keys, the seed and output-only keys.

    Trials of one study differ only in the searched keys; their seed may vary between commands.
    """
    plain_config = neutral_config(cfg, blank_seed=True)
    for key in [*OUTPUT_ONLY_KEYS, *cfg.hparams_search.params]:
        _drop(plain_config, str(key).split("."))
    return json.loads(json.dumps(plain_config, default=str))  # as a study attribute stores it


def _drop(node: dict[str, Any], path: list[str]) -> None:
    while len(path) > 1 and isinstance(node.get(path[0]), dict):
        node, path = node[path[0]], path[1:]
    if len(path) == 1 and isinstance(node, dict):
        node.pop(path[0], None)


def check_same_experiment(study: Any, cfg: DictConfig) -> None:
    """Refuse a command whose fixed config differs from the study's; a new study records it."""
    spec = cfg.hparams_search
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(
            "hparams_search.direction",
            f"study {study.study_name!r} was created to {study.direction.name.lower()}, got "
            f"{spec.direction!r}; use another hparams_search.study_name",
        )
    fixed = fixed_config(cfg)
    stored = study.user_attrs.get(FIXED_DIGEST_ATTR)
    if stored is None:  # a new study (or one from before this check) takes this config
        study.set_user_attr(FIXED_CONFIG_ATTR, fixed)
        study.set_user_attr(FIXED_DIGEST_ATTR, digest(fixed))
        return
    if stored == digest(fixed):
        return
    changed = _differences(study.user_attrs.get(FIXED_CONFIG_ATTR) or {}, fixed)
    raise ConfigError(
        "hparams_search.study_name",
        f"study {study.study_name!r} ran its trials with another fixed config"
        + (f" ({'; '.join(changed)})" if changed else "")
        + ": its trials would be ranked with these; use another study_name "
        "(or the study's config)",
    )


def _differences(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> list[str]:
    before, after = dict(_flat(old)), dict(_flat(new))
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    shown = [
        f"{k}: {before.get(k, '<absent>')} -> {after.get(k, '<absent>')}" for k in keys[:limit]
    ]
    return shown + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])


def _flat(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flat(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node
