"""Where an Optuna study lives, and what lets several workers share it.

The default storage is a SQLite file in the search folder, for one worker at a time: a lock file
refuses a second worker with one line. A PostgreSQL URL (`hparams_search.storage=postgresql://...`,
driver: the `[postgres]` extra) lets workers on many machines share one study. Workers may start at
the same instant on a new database: creating Optuna's tables and the study is serialized by a
PostgreSQL advisory lock (and retried on other databases when two workers race). A worker records a
heartbeat while its trial runs; the trial of a worker that died is failed, by the heartbeat after
the grace period, or at once by a worker on the same machine that finds its process gone, and is
retried once with the same parameters (Optuna's RetryHeartbeatStaleTrialCallback).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from reglab import log
from reglab.errors import ConfigError, first_line
from reglab.records import write_record
from reglab.search.interrupt import INTERRUPTED_ATTR

# Trial user attribute: the host, process and label of the worker running the trial.
WORKER_ATTR = "reglab_worker"
POSTGRES_DRIVER = "postgresql+psycopg"
INSTALL_POSTGRES = 'pip install -e ".[postgres]" (or pip install "psycopg[binary]")'
# Any 64-bit number, the same in every worker: the PostgreSQL advisory lock held while a worker
# creates Optuna's tables or the study.
CREATION_LOCK = 0x7265676C6162  # "reglab"
# A creation race lost on a database without advisory locks is retried this often.
CREATION_ATTEMPTS = 6
# Seconds a SQLite connection waits for another's write ("database is locked").
SQLITE_TIMEOUT_S = 60


def storage_url(spec: DictConfig, folder: Path) -> str:
    """The SQLAlchemy URL of the study: the default SQLite file, or the given URL.

    `postgresql://` and `postgres://` get psycopg 3 as their driver (what the `[postgres]` extra
    installs), whatever SQLAlchemy's default driver for them is.
    """
    url = spec.get("storage")
    if not url:
        return f"sqlite:///{(folder / 'study.db').resolve()}"
    scheme, separator, rest = str(url).partition("://")
    if separator and scheme in ("postgresql", "postgres"):
        return f"{POSTGRES_DRIVER}://{rest}"
    return str(url)


def shown_url(url: str) -> str:
    """`url` without its password: safe to write into best.yaml and logs."""
    from sqlalchemy.engine import URL, make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy parses: nothing to hide
        return url
    fields = ("drivername", "username", "host", "port", "database", "query")
    bare = URL.create(**{field: getattr(parsed, field) for field in fields})
    return bare.render_as_string(hide_password=False)


def check_driver(url: str) -> None:
    """A PostgreSQL URL needs psycopg: without it, say what to install (one line)."""
    if not url.startswith(f"{POSTGRES_DRIVER}://"):
        return
    try:
        import psycopg  # noqa: F401 - only whether it imports (with its libpq wrapper)
    except ImportError:
        raise ConfigError(
            "hparams_search.storage",
            f"a postgresql:// URL needs the psycopg driver: {INSTALL_POSTGRES}",
        ) from None


def open_study(
    spec: DictConfig, folder: Path, pruner: Any, check: Callable[[Any], None]
) -> tuple[Any, str]:
    """Create or load the study `spec.study_name`; return it and its storage URL.

    `check(study)` runs while no other worker can create the study (it records a new study's
    fixed config). Errors of the storage itself (a bad URL, no server) are one ConfigError line.
    """
    import optuna

    url = storage_url(spec, folder)
    check_driver(url)
    attempt = 0
    while True:
        attempt += 1
        try:
            with creation_lock(url):
                storage = new_storage(url, spec)
                study = optuna.create_study(
                    study_name=spec.study_name,
                    storage=storage,
                    direction=spec.direction,
                    pruner=pruner,
                    load_if_exists=True,
                )
                check(study)
                return study, url
        except ConfigError:
            raise
        except ImportError as missing:  # a driver SQLAlchemy imports for another kind of URL
            cause = first_line(missing.__cause__ or missing)
            raise ConfigError(
                "hparams_search.storage", f"the URL's database driver is missing ({cause})"
            ) from None
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's many kinds of a bad URL
            if not lost_creation_race(error) or attempt == CREATION_ATTEMPTS:
                raise ConfigError("hparams_search.storage", first_line(error)) from None
            time.sleep(random.uniform(0.1, 0.5) * attempt)  # the winner finishes meanwhile


def new_storage(url: str, spec: DictConfig) -> Any:
    """Optuna's RDB storage with the heartbeat on and failed trials retried once."""
    import optuna

    if url.startswith("sqlite"):
        engine: dict[str, Any] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    else:  # a server may drop a connection idle for a long trial: test it before use
        engine = {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=spec.get("heartbeat_interval", 60),
            grace_period=spec.get("grace_period"),
            heartbeat_stale_trial_callback=retry_once,
        )


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """On PostgreSQL, hold the advisory lock that makes workers create tables and study in turn.

    Two workers creating Optuna's tables at once collide inside PostgreSQL's catalogue
    (`UniqueViolation ... pg_type_typname_nsp_index`); the lock lasts a few milliseconds.
    Other databases go without it (their creation races are retried).
    """
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": CREATION_LOCK})
            try:
                yield
            finally:
                unlock = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
                connection.execute(unlock, {"k": CREATION_LOCK})
    finally:
        engine.dispose()


def lost_creation_race(error: BaseException) -> bool:
    """Whether `error` is another worker creating the same tables, rows or study first."""
    import optuna
    from sqlalchemy import exc

    if isinstance(error, (optuna.exceptions.DuplicatedStudyError, exc.IntegrityError)):
        return True
    text = str(error).lower()
    races = ("already exists", "database is locked", "duplicate")
    return isinstance(error, exc.DBAPIError) and any(race in text for race in races)


@contextlib.contextmanager
def one_local_worker(folder: Path, study_name: str) -> Iterator[None]:
    """Hold the search folder's worker lock: the default SQLite file serves one worker at a time.

    A second worker is refused with one line pointing at PostgreSQL. The lock (flock) ends with
    the process, so a killed worker leaves none behind.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): go without the check
        yield
        return
    with (folder / "worker.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                "hparams_search.storage",
                f"study {study_name!r} in {folder} has a worker already ({holder}): its SQLite "
                "file serves one worker at a time; for parallel workers give "
                "hparams_search.storage a PostgreSQL URL (README: Running on a cluster)",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Wait for and hold an exclusive lock on `folder` itself (workers sharing it take turns)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # and with it the lock


def retry_once(study: Any, trial: Any) -> None:
    """A failed trial whose worker died or was stopped: the same parameters again, once, as a
    waiting trial.

    The copy leaves out the worker's identity (it would make the retry look orphaned too) and
    the mark of an interrupted trial.
    """
    import optuna

    clean = copy.copy(trial)
    dropped = (WORKER_ATTR, INTERRUPTED_ATTR)
    clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in dropped}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, clean)


def worker_identity(label: Any) -> dict[str, Any]:
    """What a trial records about the worker running it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": label}


def fail_stale_trials(study: Any, local: bool) -> list[int]:
    """Fail (and retry once) the RUNNING trials no worker runs any more; return their numbers.

    Stale are: trials whose heartbeat is older than the grace period (any storage, Optuna's
    rule); trials started on this host by a process that is gone; and, with the default local
    storage (one worker at a time), trials of an unknown worker (no heartbeat, no worker attribute).
    """
    import optuna

    running = [optuna.trial.TrialState.RUNNING]
    before = {t.number for t in study.get_trials(deepcopy=False, states=running)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=running):
        if orphaned(trial, local):
            fail_and_retry(study, trial)
    failed = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.FAIL])
    return sorted(t.number for t in failed if t.number in before)


def fail_and_retry(study: Any, trial: Any) -> None:
    """Fail `trial` and retry it once, unless another worker did so first."""
    import optuna

    storage = study._storage  # the storage says whether this call or another worker's failed it
    try:
        if not storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    retry_once(study, storage.get_trial(trial._trial_id))


def orphaned(trial: Any, local: bool) -> bool:
    """Whether a RUNNING trial's worker is known to be gone (a process of this host)."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(worker, dict):
        return local
    if worker.get("host") != socket.gethostname():
        return False  # another machine: only its heartbeat tells
    try:
        os.kill(int(worker.get("pid", 0)), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OSError, TypeError, ValueError, OverflowError):
        return False  # alive under another user, or an odd attribute: the heartbeat decides
    return False


def mark_stale_records(study: Any, numbers: list[int], folder: Path) -> None:
    """Write a failed metrics.json into the folders of trials found stale."""
    if not numbers:
        return
    log.info(
        f"reglab search: marked stale running trials {numbers} failed (their worker stopped); "
        "each is retried once"
    )
    for trial in study.get_trials(deepcopy=False):
        trial_dir = folder / f"trial_{trial.number:04d}"
        if trial.number in numbers and trial_dir.is_dir():
            error = "stale: its worker stopped while it was running"
            write_record(trial_dir, {"status": "failed", "error": error, "params": trial.params})


def counted_trials(study: Any) -> int:
    """The trials that count against `total_trials`: all but failed ones another trial retries."""
    trials = study.get_trials(deepcopy=False)
    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried for t in trials)


def stop_at(total: int) -> Callable[[Any, Any], None]:
    """A study.optimize callback: stop this worker once the study holds `total` counted trials."""

    def stop(study: Any, trial: Any) -> None:
        if counted_trials(study) >= total:
            study.stop()

    return stop
