"""What a run folder held before the run, so that a run that keeps nothing removes only its own.

`debug=fdr` and `keep_outputs=false` remove the run's outputs when it ends. A user may point
`hydra.run.dir` (or `hydra.sweep.dir`) at a folder that exists and holds their own files: the run
then removes only the entries that were not there when it started, and the folder itself only
if the run created it.

Hydra creates the run folder and writes .hydra/ and the job's log file before any reglab code
runs, so the Hydra callback `NoteRunFolder` (conf/hydra/default.yaml) looks first. A run that
Hydra did not start, or a job a launcher runs in another process, looks when it starts and
counts what Hydra wrote for this job (.hydra/, the job's log files) as its own.

No Lightning or torch here: Hydra imports this module before a bad config value is answered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Where a run that keeps nothing writes when its folder already holds files, so that it
# overwrites none of them (an earlier run's metrics.json, checkpoints/last.ckpt).
SCRATCH = ".reglab-unkept"


@dataclass(frozen=True)
class Before:
    """The entries (paths relative to the folder, every depth) a folder held before a run;
    `entries is None`: the folder did not exist."""

    entries: frozenset[str] | None

    def remove_new(self, folder: Path) -> None:
        """Remove what was not in the folder before: all of it if the run created the folder."""
        if self.entries is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            shutil.rmtree(folder / SCRATCH, ignore_errors=True)  # the run's, even if left before
            _remove_new_below(folder, "", self.entries)


def snapshot(folder: Path) -> Before:
    """Every entry below `folder` now (symbolic links listed, not followed)."""
    if not folder.is_dir():
        return Before(None)
    entries = set()
    for root, dirs, files in os.walk(folder):
        relative = Path(root).relative_to(folder)
        entries.update((relative / name).as_posix() for name in (*dirs, *files))
    return Before(frozenset(entries))


def _remove_new_below(folder: Path, relative: str, before: frozenset[str]) -> None:
    with os.scandir(folder / relative) as scan:
        found = list(scan)
    for entry in found:
        name = f"{relative}/{entry.name}" if relative else entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        if name in before:
            if is_dir:  # an existing folder the run may have written into (checkpoints/)
                _remove_new_below(folder, name, before)
        elif is_dir:
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def _key(folder: str | Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(folder))))


# Folders noted by NoteRunFolder before Hydra wrote into them, until the run (or sweep) ends.
_NOTES: dict[Path, Before] = {}


def before_run(folder: Path) -> Before:
    """What `folder` held before this run: from the note of the folder (a run) or of a folder
    above it (a sweep or search), else from a look now less what Hydra wrote for this job."""
    key = _key(folder)
    for noted in (key, *key.parents):
        if noted in _NOTES:
            return _below(_NOTES[noted], key.relative_to(noted).as_posix())
    now = snapshot(folder)
    if now.entries is None:
        return now
    mine = _hydra_outputs(key)
    entries = frozenset(e for e in now.entries if not any(_within(e, m) for m in mine))
    # Nothing but Hydra's files for this job: Hydra created the folder for this run.
    return Before(entries if entries or not mine else None)


def _below(before: Before, relative: str) -> Before:
    if relative == ".":
        return before
    if before.entries is None or relative not in before.entries:
        return Before(None)
    prefix = relative + "/"
    return Before(frozenset(e[len(prefix) :] for e in before.entries if e.startswith(prefix)))


def _within(entry: str, top: str) -> bool:
    return entry == top or entry.startswith(top + "/")


def _hydra_outputs(folder: Path) -> list[str]:
    """The entries Hydra wrote into `folder` for the job running now: .hydra/ and log files."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    hydra = HydraConfig.get()
    if _key(hydra.runtime.output_dir) != folder:
        return []
    mine = [hydra.output_subdir] if hydra.output_subdir else []
    for handler in logging.getLogger().handlers:
        path = getattr(handler, "baseFilename", None)
        if path and _key(path).parent == folder:
            mine.append(Path(path).name)
    return mine


class NoteRunFolder(Callback):
    """Hydra callback: note what the run (or sweep) folder holds before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: D102
        self._note(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: D102
        self._note(config, "hydra.sweep.dir")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: D102
        self._forget(config, "hydra.run.dir")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:  # noqa: D102
        self._forget(config, "hydra.sweep.dir")

    @staticmethod
    def _folder(config: DictConfig, key: str) -> Path | None:
        try:
            folder = OmegaConf.select(config, key)
        except Exception:  # noqa: BLE001 - Hydra reports a folder it cannot resolve itself
            return None
        return _key(folder) if folder else None

    def _note(self, config: DictConfig, key: str) -> None:
        folder = self._folder(config, key)
        # Listed only for a run that may keep nothing (a run that keeps its outputs removes none).
        if folder is not None and _may_keep_nothing(config):
            _NOTES[folder] = snapshot(folder)

    def _forget(self, config: DictConfig, key: str) -> None:
        folder = self._folder(config, key)
        if folder is not None:
            _NOTES.pop(folder, None)


def _may_keep_nothing(config: DictConfig) -> bool:
    try:
        if OmegaConf.select(config, "keep_outputs", default=True) is not True:
            return True
    except Exception:  # noqa: BLE001 - an interpolation: assume it might be false
        return True
    overrides = OmegaConf.select(config, "hydra.overrides.task", default=[]) or []
    return any("keep_outputs" in str(override) for override in overrides)
