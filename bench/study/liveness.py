"""Which worker holds a trial and whether it is still alive: host, pid, a process token and a heartbeat per trial.

The heartbeat is a timestamp in the trial's user attributes (any Optuna storage). A trial is stale when its
process is gone from this host (checked at once) or its heartbeat is older than the grace period (any host: a
machine that died, lost power or its network). The token tells a process from an earlier one that had the same
host name and pid (a restarted container is often pid 1 again).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command line imports DEFAULT_GRACE without loading Optuna
    import optuna

DEFAULT_GRACE = 300.0  # seconds without a heartbeat before another worker fails a trial and reruns it
# Attribute names on an Optuna trial (the MLflow run carries host and pid as tags too).
HOST, PID, TOKEN, BEAT, BEAT_EVERY = "host", "pid", "worker_token", "heartbeat", "heartbeat_interval"


def hostname() -> str:
    """This worker's host name: $BENCH_HOSTNAME (containers sharing one name, tests simulating a second
    machine), else the machine's."""
    return os.environ.get("BENCH_HOSTNAME") or socket.gethostname()


def heartbeat_interval(grace: float) -> float:
    """Seconds between heartbeats: a tenth of the grace period, between 1 s and 30 s."""
    return min(30.0, max(1.0, grace / 10))


def process_birth(pid: int) -> str:
    """When process `pid` started, as "<boot id>:<clock ticks after boot>" from /proc; "" where /proc cannot say
    (not Linux, or the process is gone). Two processes that ever had one pid on one host differ here."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return f"{boot}:{fields[19]}"  # field 22 of proc(5), starttime; fields[0] is field 3
    except (OSError, IndexError):
        return ""


# This process's token: random (unique even where /proc is missing) and its birth (checkable by other processes
# on this host while it runs). Recorded with host and pid on every trial it claims and on its MLflow runs.
WORKER_TOKEN = f"{uuid.uuid4().hex[:16]}@{process_birth(os.getpid())}"


def token_birth(token: str | None) -> str:
    return (token or "").partition("@")[2]


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return False


def local_gone(host: str, pid: str, token: str | None) -> str | None:
    """Why the worker (host, pid, token) of this host is gone, or None while it runs (or is this process).

    This pid with another token (or none) is an earlier process that had this host name and pid: gone. Another
    pid is gone when the process table has no such process, or when the process now under that pid started at
    another time than the token says (the pid was reused)."""
    who = f"{host}:{pid}"
    if int(pid) == os.getpid():
        if token == WORKER_TOKEN:
            return None  # ours: the heartbeat thread keeps it, whatever a storage outage did to its timestamps
        return f"worker {who} is gone (an earlier process with this host name and process id)"
    if process_gone(int(pid)):
        return f"worker {who} is gone (its process no longer exists on this host)"
    birth, now = token_birth(token), process_birth(int(pid))
    if birth and now and birth != now:
        return f"worker {who} is gone (its process id now belongs to another process)"
    return None


def stale_reason(trial: optuna.trial.FrozenTrial, grace: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial's worker is judged dead, or None while it is alive (or is this process).

    On this host the process table decides (local_gone): gone is dead at once, present is alive. Elsewhere a
    heartbeat older than the grace period (or three of the writer's own intervals, if longer) is dead; a trial
    without a heartbeat (claimed by a worker that died before writing one) counts from its start. Clocks are
    assumed to agree to well within the grace period (NTP)."""
    attrs = trial.user_attrs
    host, pid = attrs.get(HOST), str(attrs.get(PID, ""))
    if host == hostname() and pid.isdigit():  # this host: the process table says, at once and for sure
        return local_gone(host, pid, attrs.get(TOKEN))
    who = f"{host}:{pid}" if host else "an unknown worker"
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
        return {HOST: hostname(), PID: os.getpid(), TOKEN: WORKER_TOKEN, BEAT: time.time(), BEAT_EVERY: self.interval}

    def hold(self, trial: optuna.Trial) -> None:
        """Stamp `trial` from now on (its identity attributes are the caller's to write)."""
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
