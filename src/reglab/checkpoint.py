"""The one place reglab opens a checkpoint a user names (`ckpt_path`, to resume or to evaluate).

A run folder stands for one of its checkpoints: `last` (checkpoints/last.ckpt, the end of the
latest epoch: where training resumes) or `best` (the checkpoint the run tested: metrics.json's
`best_checkpoint`, else the folder's single checkpoints/epoch_*.ckpt). Every file that cannot be
used is refused with one ConfigError line naming the key: a missing path, a folder without a
checkpoint, an empty, truncated or garbage file, a torch file that is not a Lightning checkpoint,
and (`check_matches`) a checkpoint of another model than the config builds.

Files are read as Lightning reads them when it resumes or tests, with
`torch.load(weights_only=True)`: tensors and plain Python values only, so a checkpoint cannot run
code. reglab's own checkpoints are written that way (plain-container hyperparameters, random
states without NumPy arrays); a checkpoint that pickles Python objects is refused, not trusted.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from reglab.errors import ConfigError
from reglab.records import read_record

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST_PATTERN = "epoch_*.ckpt"  # conf/callbacks/model_checkpoint.yaml's filename
WHICH = ("last", "best")
# What Lightning needs besides the weights to continue training (absent with save_weights_only).
RESUME_KEYS = ("optimizer_states", "loops")


def resolve(path: str | Path, which: str = "last", key: str = "ckpt_path") -> Path:
    """The checkpoint file `path` stands for: itself, or a run folder's `last` or `best` one."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    given = Path(str(path)).expanduser()
    if given.is_file():
        return given
    if not given.exists():
        raise ConfigError(key, f"no checkpoint at {str(given)!r}: no such file or folder")
    if not given.is_dir():
        raise ConfigError(key, f"{str(given)!r} is not a checkpoint file or a run folder")
    if which == "best":
        return best_checkpoint(given, key)
    last = given / CHECKPOINTS / LAST
    if not last.is_file():
        raise ConfigError(key, f"no checkpoint at {str(last)!r} (is {str(given)!r} a run folder?)")
    return last


def best_checkpoint(run_dir: Path, key: str = "ckpt_path") -> Path:
    """The run's tested checkpoint: metrics.json's `best_checkpoint`, else its one epoch_*.ckpt.

    The file is looked up by name in the run's own checkpoints/ first, so a run folder that was
    moved or copied still finds it.
    """
    named = _recorded_best(run_dir)
    if named:
        for candidate in (run_dir / CHECKPOINTS / Path(named).name, Path(named)):
            if candidate.is_file():
                return candidate
        raise ConfigError(key, f"the best checkpoint {named!r} in {run_dir}/metrics.json is gone")
    found = sorted((run_dir / CHECKPOINTS).glob(BEST_PATTERN))
    if len(found) == 1:
        return found[0]
    where = f"{run_dir}/{CHECKPOINTS}/{BEST_PATTERN}"
    if not found:
        raise ConfigError(key, f"no best checkpoint in {str(run_dir)!r}: nothing matches {where}")
    raise ConfigError(
        key,
        f"{len(found)} checkpoints match {where} and no metrics.json names the best; "
        f"give one file, e.g. ckpt_path={found[-1]}",
    )


def _recorded_best(run_dir: Path) -> str | None:
    try:
        record = read_record(run_dir) or {}
    except (OSError, ValueError):  # an unreadable metrics.json: fall back to the folder's files
        return None
    named = record.get("best_checkpoint") if isinstance(record, dict) else None
    return named if isinstance(named, str) and named else None


def read_checkpoint(path: str | Path, key: str = "ckpt_path", which: str = "last") -> dict:
    """The Lightning checkpoint at `path` (a file, or a run folder's `which` checkpoint).

    Raises ConfigError(key, one line) for anything that is not a readable Lightning checkpoint.
    """
    file = resolve(path, which, key)
    loaded = _load(file, key)
    if not isinstance(loaded, dict):
        raise ConfigError(
            key, f"{file} holds a {type(loaded).__name__}, not a Lightning checkpoint"
        )
    state = loaded.get("state_dict")
    if state is None or "pytorch-lightning_version" not in loaded:
        if loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ConfigError(
                key,
                f"{file} holds bare weights (a state_dict of {_count(loaded, 'tensor')}), not a "
                "Lightning checkpoint; give a checkpoint a reglab run wrote",
            )
        keys = ", ".join(map(str, list(loaded)[:5])) or "none"
        lacks = "state_dict" if state is None else "pytorch-lightning_version"
        raise ConfigError(
            key, f"{file} is a torch file but not a Lightning checkpoint (no {lacks}; keys: {keys})"
        )
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ConfigError(key, f"{file}: its state_dict is not a mapping of names to tensors")
    return loaded


def _load(file: Path, key: str) -> Any:
    """torch.load as Lightning does it; every way of failing becomes one line about the file."""
    try:
        size = file.stat().st_size
    except OSError as error:
        raise ConfigError(key, f"cannot read {file}: {error.strerror or error}") from None
    if size == 0:
        raise ConfigError(key, f"{file} is empty (0 bytes): not a checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise ConfigError(key, f"cannot read {file}: {error.strerror}") from None
    except Exception as error:  # noqa: BLE001 - torch raises a different type for each damage
        raise ConfigError(key, f"{file} {_damage(file, error)}") from None


def _damage(file: Path, error: Exception) -> str:
    """What is wrong with a file torch could not load, without torch's advice to trust it."""
    with file.open("rb") as stream:
        zipped = stream.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    if zipped and not zipfile.is_zipfile(file):
        return (
            f"is truncated or damaged (an incomplete torch archive of {file.stat().st_size} bytes)"
        )
    # torch's weights-only unpickler names the global it refused: "Unsupported global: GLOBAL
    # torch.nn.modules.linear.Linear", or for a blocked module ("trying to load unsupported
    # GLOBAL posix.system whose module posix is blocked": a payload that would run a command).
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return (
            f"holds Python objects reglab will not unpickle ({found[1]}): a weights-only load "
            "refused them; reglab reads checkpoints without running code in them (tensors and "
            "plain values only), so it is not a checkpoint reglab wrote"
        )
    if zipped:
        return f"is a damaged torch archive ({type(error).__name__})"
    return "is not a torch checkpoint (unreadable bytes)"


def check_resumable(checkpoint: dict, key: str = "ckpt_path") -> None:
    """Refuse a weights-only checkpoint as a place to resume training from."""
    missing = [name for name in RESUME_KEYS if name not in checkpoint]
    if missing:
        raise ConfigError(
            key,
            f"the checkpoint holds weights only (no {', '.join(missing)}): training cannot resume "
            "from it; evaluate it with eval.py or start a new run",
        )


def check_matches(checkpoint: dict, module: torch.nn.Module, key: str = "ckpt_path") -> None:
    """Refuse a checkpoint whose weights are not those of `module` (names and shapes)."""
    problem = differences(checkpoint["state_dict"], module.state_dict())
    if problem:
        raise ConfigError(
            key,
            f"the checkpoint holds a different model than the config builds: {problem} "
            "(use the model config it was trained with)",
        )


def differences(saved: Mapping[str, torch.Tensor], built: Mapping[str, torch.Tensor]) -> str:
    """'' when both state_dicts have the same names and shapes, else what differs, briefly."""
    shapes = [
        f"{name} is {_shape(saved[name])} in it, {_shape(built[name])} in the model"
        for name in built
        if name in saved and saved[name].shape != built[name].shape
    ]
    missing = [name for name in built if name not in saved]
    unexpected = [name for name in saved if name not in built]
    parts = []
    if shapes:
        more = f" (and {_count(shapes[1:], 'other shape')})" if len(shapes) > 1 else ""
        parts.append(shapes[0] + more)
    if missing:
        parts.append(f"{_count(missing, 'tensor')} of the model missing ({_some(missing)})")
    if unexpected:
        parts.append(
            f"{_count(unexpected, 'tensor')} the model does not have ({_some(unexpected)})"
        )
    return "; ".join(parts)


def _count(items: Mapping | list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _some(names: list[str]) -> str:
    return names[0] + (", ..." if len(names) > 1 else "")


def describe(checkpoint: dict) -> dict[str, Any]:
    """A few facts about a checkpoint for a record: its epoch, step and Lightning version."""
    return {
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "lightning": str(checkpoint.get("pytorch-lightning_version")),
    }
