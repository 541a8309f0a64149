"""A throwaway PostgreSQL server on this machine: to try parallel Optuna workers, and for the tests.

    python scripts/postgres.py                  # start one, print its URL, stop it on Ctrl-C
    python scripts/postgres.py --port 55432     # on that port (default: a free one)

It runs the distribution's PostgreSQL binaries (Debian/Ubuntu: `apt-get install postgresql`) on
127.0.0.1 only, with trust authentication (no password: anyone on this machine can connect) and
its data in a temporary folder that is deleted when it stops: nothing survives. Durability is
off (no fsync), which is what makes it quick to start. Keep a study you care about on a real
server (README: Running on a cluster). Started by root, the server runs as the `postgres` system
user, as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROLE = "reglab"  # the superuser initdb creates; trust authentication needs no password
SYSTEM_USER = "postgres"  # who runs the server when this script runs as root


def bin_dir() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/<v>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent  # a symlink on PATH: the folder of its siblings
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def unavailable() -> str | None:
    """Why no server can be started here (no binaries, or root without a `postgres` user)."""
    if bin_dir() is None:
        return (
            "PostgreSQL's binaries (initdb, pg_ctl) are not installed: apt-get install postgresql"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {SYSTEM_USER!r} system user to run the server"
    return None


@dataclass
class Server:
    """A running server: where it listens and how to reach its databases."""

    port: int
    folder: Path
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        """The URL of `database`, as `hparams_search.storage` takes it."""
        return f"postgresql://{ROLE}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the empty database `name`; return its URL."""
        createdb = bin_dir() / "createdb"
        command = [str(createdb), "-h", self.host, "-p", str(self.port), "-U", ROLE, name]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        return self.url(name)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str], folder: Path) -> subprocess.CompletedProcess:
    """Run a PostgreSQL binary as the user the server runs as (`postgres` when we are root)."""
    user = {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}
    return subprocess.run(
        command,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        **(user if os.geteuid() == 0 else {}),
    )


def _checked(done: subprocess.CompletedProcess, what: str, log: Path | None = None) -> None:
    if done.returncode == 0:
        return
    text = (done.stdout + done.stderr).strip()
    if log is not None and log.is_file():
        text += "\n" + log.read_text()[-2000:]
    raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{text}")


@contextlib.contextmanager
def throwaway_server(port: int | None = None) -> Iterator[Server]:
    """Start a server on 127.0.0.1 (a free port unless given); stop it and delete its data after."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    binaries = bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="reglab-postgres-"))
    if os.geteuid() == 0:  # the server's user must own its data and socket folder
        account = pwd.getpwnam(SYSTEM_USER)
        os.chown(folder, account.pw_uid, account.pw_gid)
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "-A", "trust"]
        initdb += ["-E", "UTF8", "--locale=C", "--no-sync"]
        _checked(_as_server_user(initdb, folder), "initdb")
        attempts = [port] if port else [free_port() for _ in range(3)]
        for attempt, chosen in enumerate(attempts):
            # Loopback only, the socket in our folder, no fsync: a throwaway for one session.
            options = f"-h 127.0.0.1 -p {chosen} -k {folder} -F -c synchronous_commit=off"
            start = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
            done = _as_server_user([*start, "-o", options, "start"], folder)
            if done.returncode == 0:
                started = True
                yield Server(port=chosen, folder=folder)
                return
            if attempt == len(attempts) - 1:  # another process took the port meanwhile: retry
                _checked(done, f"pg_ctl start on port {chosen}", log)
    finally:
        if started:
            stop = [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            _as_server_user(stop, folder)
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Start a server, print its URL, keep it until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"postgres.py: {reason}", file=sys.stderr)
        raise SystemExit(2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on `kill` too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, also when started with &
    with throwaway_server(args.port) as server:
        print(f"PostgreSQL on 127.0.0.1:{server.port}; data in {server.folder} (deleted on exit)")
        print(f"  hparams_search.storage={server.url()}")
        print("Ctrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
