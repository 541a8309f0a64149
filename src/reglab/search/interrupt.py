"""A search worker stopped by SIGTERM or Ctrl-C fails its running trial instead of leaving it RUNNING.

Optuna fails a trial whose objective raises an Exception or KeyboardInterrupt, and re-raises the
latter; anything else (reglab's RunInterrupted, Lightning's SystemExit on SIGTERM) would leave the
trial RUNNING in the study, and SIGTERM outside training would end the process at once. So:

- while the worker's trials run, SIGTERM stops it: inside a trial at once (`TrialInterrupted`),
  unless Lightning is fitting or testing (its handler, which calls this one too, stops at the
  next step, and the run records `interrupted`); between trials after the trial in hand;
- the trial's objective turns any interruption into `TrialInterrupted`: Optuna records the trial
  FAIL, with the user attribute `interrupted: true`, and the worker exits non-zero (storage.py
  retries such a trial once, as one whose worker was killed).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# Trial user attribute of a trial its worker was stopped in.
INTERRUPTED_ATTR = "interrupted"


class TrialInterrupted(KeyboardInterrupt):
    """A trial stopped by a signal: Optuna fails the trial and re-raises this (not caught as an
    ordinary failure, after which the worker would go on)."""


class StopOnSigterm:
    """SIGTERM handling for a worker's trials (`installed()`, around `study.optimize`)."""

    def __init__(self) -> None:
        self.received = False  # a SIGTERM came: the worker stops after the trial in hand
        self.in_trial = False  # between a trial's start and end (set by the objective)

    def handler(self, signum: int, frame: FrameType | None) -> None:
        """Note the signal; inside a trial and outside Lightning's fit/test, stop the trial now."""
        self.received = True
        # Lightning's own handler, installed while it fits or tests, calls this one after its
        # own: it then stops at the next step and records the run interrupted.
        if self.in_trial and signal.getsignal(signal.SIGTERM) == self.handler:
            raise TrialInterrupted("stopped by SIGTERM")

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGTERM in the block (Python allows handlers in the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self.handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def stop_after_trial(self, study: Any, trial: Any) -> None:
        """A study.optimize callback: no next trial once a SIGTERM came."""
        if self.received:
            study.stop()


def reason(stop: BaseException, sigterm: bool) -> str:
    """What stopped a trial, in a few words, from the exception that ended it; `sigterm`: whether
    a SIGTERM came (Lightning ends its fit with the same exception on SIGTERM and on Ctrl-C)."""
    if isinstance(stop, TrialInterrupted):
        return str(stop)
    if type(stop).__name__ == "SIGTERMException":  # Lightning's, while it tests
        return "stopped by SIGTERM"
    stopped_by = "stopped by SIGTERM" if sigterm else "stopped by Ctrl-C"
    if isinstance(stop, (KeyboardInterrupt, SystemExit)):
        return stopped_by
    # reglab's RunInterrupted: "interrupted at epoch N; resume with ckpt_path=..." (a trial
    # runs again with the search, not from its checkpoint)
    text = str(stop).partition(";")[0].strip() or "interrupted"
    return text.replace("interrupted", stopped_by)
