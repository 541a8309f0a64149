"""A run's folder before training: one process at a time, nothing stale, room to write.

- `job_lock`: an exclusive lock per job folder, so two processes resuming the same sweep never
  both run a job (the second skips it).
- `clear_previous_attempt`: a run into a folder that holds an earlier attempt removes that
  attempt's metrics.json, checkpoints and event files first, so a failure of this run cannot
  leave an old `ok` beside the new overrides (a resume from the folder keeps its checkpoints
  and its csv/ log, which the resumed run continues).
- `check_writable`: the folder and its checkpoints/ can be written and the disk has room for
  the checkpoints, or the run stops before training with one line naming `paths.output_dir`.
"""

from __future__ import annotations

import errno
import fcntl
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from reglab.errors import ConfigError
from reglab.records import RECORD

LOCK_FILE = ".reglab.lock"
OUTPUT_KEY = "paths.output_dir"
LEFTOVERS = ("checkpoints", "tensorboard", "csv", RECORD)
# Logs a run resumed into its own folder continues (reglab.csv_logger keeps the earlier epochs).
CONTINUED_LOGS = ("csv",)
# Checkpoints kept at once: the best and the last one, plus the one being written.
CHECKPOINT_COPIES = 3
SPARE_BYTES = 16 * 2**20  # event files, logs, metrics.json


class JobBusy(Exception):
    """Another process holds this job folder's lock."""


@contextmanager
def job_lock(output_dir: Path) -> Iterator[None]:
    """Hold the job folder's lock for the block; JobBusy if another process holds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusy(output_dir.name) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@rank_zero_only
def clear_previous_attempt(output_dir: Path, resume_from: str | None) -> None:
    """Remove what an earlier attempt left in `output_dir` (not the checkpoint resumed from)."""
    keep = Path(resume_from).resolve() if resume_from else None
    resuming_here = keep is not None and keep.is_relative_to(output_dir.resolve())
    for name in LEFTOVERS:
        path = output_dir / name
        if keep is not None and keep.is_relative_to(path.resolve()):
            continue
        if resuming_here and name in CONTINUED_LOGS:  # the resumed run continues them
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


@rank_zero_only
def check_writable(output_dir: Path, checkpoint_bytes: int) -> None:
    """Write a probe in checkpoints/ and check free space, before any training."""
    checkpoints = output_dir / "checkpoints"
    probe = checkpoints / ".reglab-write-probe"
    try:
        checkpoints.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or error
        raise ConfigError(OUTPUT_KEY, f"cannot write in {checkpoints}: {reason}") from None
    needed = CHECKPOINT_COPIES * checkpoint_bytes + SPARE_BYTES
    free = shutil.disk_usage(checkpoints).free
    if free < needed:
        raise ConfigError(
            OUTPUT_KEY,
            f"only {free / 2**20:.0f} MB free on the disk of {output_dir}; this run's checkpoints "
            f"need about {needed / 2**20:.0f} MB",
        )
