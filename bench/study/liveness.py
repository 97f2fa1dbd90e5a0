"""Which worker holds a trial and whether it is still alive: host, pid and a heartbeat per claimed trial.

The heartbeat is a timestamp in the trial's user attributes (any Optuna storage). A trial is stale when its
process is gone from this host (checked at once) or its heartbeat is older than the grace period (any host: a
machine that died, lost power or its network).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports DEFAULT_GRACE without loading Optuna
    import optuna

DEFAULT_GRACE = 300.0  # seconds without a heartbeat before another worker fails a trial and reruns it
# Attribute names on an Optuna trial (the MLflow run carries host and pid as tags too).
HOST, PID, BEAT, BEAT_EVERY = "host", "pid", "heartbeat", "heartbeat_interval"


def hostname() -> str:
    """This worker's host name: $BENCH_HOSTNAME (containers sharing one name, tests simulating a second
    machine), else the machine's."""
    return os.environ.get("BENCH_HOSTNAME") or socket.gethostname()


def heartbeat_interval(grace: float) -> float:
    """Seconds between heartbeats: a tenth of the grace period, between 1 s and 30 s."""
    return min(30.0, max(1.0, grace / 10))


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


def stale_reason(trial: optuna.trial.FrozenTrial, grace: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial's worker is judged dead, or None while it is alive (or is this process).

    On this host the pid decides: gone is dead at once, present is alive. Elsewhere a heartbeat older than
    the grace period (or three of the writer's own intervals, if longer) is dead; a trial without a heartbeat
    (claimed by a worker that died before writing one) counts from its start. Clocks are assumed to agree to well
    within the grace period (NTP)."""
    attrs = trial.user_attrs
    host, pid = attrs.get(HOST), str(attrs.get(PID, ""))
    if host == hostname() and pid == str(os.getpid()):
        return None  # ours: the heartbeat thread keeps it, whatever a storage outage did to its timestamps
    who = f"{host}:{pid}" if host else "an unknown worker"
    if host == hostname() and pid.isdigit():  # this host: the process table says, at once and for sure
        return f"worker {who} is gone (its process no longer exists on this host)" if process_gone(int(pid)) else None
    now = time.time() if now is None else now
    beat = attrs.get(BEAT)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if beat is None:
        return None
    limit = max(grace, 3 * float(attrs.get(BEAT_EVERY, 0)))
    silent = now - float(beat)
    if silent > limit:
        return f"worker {who} sent no heartbeat for {silent:.0f} s (grace period {limit:.0f} s)"
    return None


class Heartbeat:
    """A daemon thread that stamps every trial this process holds, every `interval` seconds.

    A storage that is away (a database restart) only delays the stamps: the thread keeps trying, and other
    workers wait the grace period before judging."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float):
        # the storage without bench's retry wrapper: a stamp that fails is simply the next one's to make
        self.storage, self.interval = getattr(storage, "inner", storage), interval
        self.held: set[int] = set()  # storage trial ids
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-heartbeat", daemon=True)
        self.thread.start()

    def identity(self) -> dict[str, object]:
        """The attributes a claimed trial gets at once: who holds it, and a first heartbeat."""
        return {HOST: hostname(), PID: os.getpid(), BEAT: time.time(), BEAT_EVERY: self.interval}

    def hold(self, trial: optuna.Trial) -> None:
        for key, value in self.identity().items():
            trial.set_user_attr(key, value)
        with self.lock:
            self.held.add(trial._trial_id)

    def release(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.held.discard(trial._trial_id)

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            with self.lock:
                held = list(self.held)
            for trial_id in held:
                try:
                    self.storage.set_trial_user_attr(trial_id, BEAT, time.time())
                except Exception:  # finished meanwhile, or the storage is away: the next beat tries again
                    pass

    def stop(self) -> None:
        self.stop_event.set()
