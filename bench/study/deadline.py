"""`bench study --time-budget`: a study that stops cleanly before a deadline (a GPU slot, a Slurm limit, a notebook).

No trial starts that the `--plan` estimate says cannot finish in the time left; at the deadline the trials still
training are stopped (their runs end KILLED, their Optuna trials fail, so they are rerun next time and never count
as finished), and the execution ends with exit status 0 and one line saying what is left. Only training can be
interrupted: writes to the stores (the per-epoch metrics included) finish first.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .files import Arm, Study


class TimeBudgetReached(BaseException):
    """Raised inside training at the deadline. A BaseException, as KeyboardInterrupt is: no `except Exception` on
    the way swallows it, and every layer that cleans up after Ctrl-C cleans up after it."""


class Deadline:
    """An absolute time (time.time()) by which the execution stops; None: no deadline, and nothing here does anything."""

    def __init__(self, at: float | None, estimates: dict[tuple[str, str], float] | None = None):
        self.at = at
        self.estimates = estimates or {}  # (stage, arm) -> estimated seconds of one claim (a pack) of that arm
        self.reached = False  # the deadline passed (a trial was stopped, or none could start)
        self.deferred: set[tuple[str, str]] = set()  # (stage, arm) that did not fit in the time left
        self._depth, self._shielded, self._pending = 0, 0, False

    def left(self) -> float:
        return float("inf") if self.at is None else self.at - time.time()

    def admits(self, stage: str, arm: Arm) -> bool:
        """Whether a claim of `arm` at `stage` may start: its estimate fits in the time left."""
        if self.at is None:
            return True
        left = self.left()
        if left <= 0 or self.estimates.get((stage, arm.name), 0.0) > left:
            self.deferred.add((stage, arm.name))
            self.reached = self.reached or left <= 0
            return False
        return True

    # ------------------------------------------------------------------ stopping what trains at the deadline
    def _alarm(self, signum, frame) -> None:
        self.reached = True
        if self._depth and not self._shielded:
            raise TimeBudgetReached()
        self._pending = True

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Training inside may be stopped by TimeBudgetReached at the deadline (SIGALRM, main thread only)."""
        if self.at is None:
            yield
            return
        if self.left() <= 0:
            self.reached = True
            raise TimeBudgetReached()
        previous = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.001))
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            self._pending = False

    @contextmanager
    def shield(self) -> Iterator[None]:
        """A write to the stores inside training: the deadline waits until it is done."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1
        if self._pending and self._depth and not self._shielded:
            self._pending = False
            raise TimeBudgetReached()


@contextmanager
def ctrl_c_after() -> Iterator[None]:
    """A short store write in the middle of training that Ctrl-C must not cut (an Optuna journal lock taken and never
    released leaves every later write waiting): a SIGINT meanwhile is held back and handled as usual right after.
    In the main thread (the only one Python runs signal handlers in); elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(signal.SIGINT, None)  # Python's default raises KeyboardInterrupt here
        elif held and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)  # the default action, now that the write is done


def claim_estimates(study: Study, profile: str, device_kind: str, pack: int, workers: int) -> dict[tuple[str, str], float]:
    """(stage, arm) -> the seconds one claim of it takes by `--plan`'s estimate: a trial's share of its line, times
    the trials that train beside it (its pack and the other workers' packs), as the estimate is of their aggregate."""
    from .plan import plan_lines

    lines, _ = plan_lines(study, profile, device_kind)
    return {(line.stage, line.arm): line.seconds / max(line.trials, 1) * pack * workers for line in lines}
