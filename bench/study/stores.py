"""Opening the two stores a study writes (Optuna trials, MLflow runs) so that they survive what fails underneath.

Calls are retried with backoff while a database or tracking server restarts; a full disk is one line naming the
folder; a new SQLite store is created whole so that no reader sees it half-migrated (sqlite_store.py).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna

from bench.errors import BenchError
from bench.paths import writable_dir

from .sqlite_store import create_sqlite_store
from .uris import health_url, redact, sqlite_path

T = TypeVar("T")
# How long a store call is retried while its server is away, in seconds (BENCH_STORE_RETRY_SECONDS).
# Backoff between tries: 0.5 s doubling to at most 30 s. MLflow's HTTP client retries first on its own
# (MLFLOW_HTTP_REQUEST_MAX_RETRIES = 7 with backoff factor 2: about 4 minutes) before a call fails here.
RETRY_SECONDS = 300.0
FIRST_DELAY, MAX_DELAY = 0.5, 30.0
MIN_FREE_MB = 32  # free space a store's folder needs before a study starts (a trial writes well under 1 MB)
DEFAULT_JOURNAL = "optuna/studies.journal"  # under the working directory (the project root via make)

# Message fragments of errors that go away when the server comes back (PostgreSQL, MLflow's REST client,
# SQLite under concurrent writers). Matched on every exception of the chain, lower-cased.
TRANSIENT = (
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "connection aborted",
    "connection is closed",
    "connection already closed",
    "server closed the connection",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "could not connect",
    "connection failed",
    "consuming input failed",
    "ssl syscall error",
    "database is locked",
    "remote end closed connection",
    "bad gateway",
    "service unavailable",
    "temporarily unavailable",
)


class StoreError(BenchError):
    """A store that cannot be opened or written before work starts (unreachable, unwritable, full)."""


class TrackingError(StoreError):
    """The tracking store cannot be used; raised before any training starts (the CLI exits 2)."""


class DiskFullError(StoreError):
    """A store's filesystem is full: one line naming the folder and the space needed; resuming loses nothing."""


@dataclass(frozen=True)
class Where:
    """What a store call writes to, for messages: a name with any password hidden, and its local folder."""

    what: str  # e.g. "MLflow store sqlite:///mlflow.db (log_batch)"
    folder: Path | None = None  # the local folder it writes, when it is a file store


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a filesystem out of space or over quota."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e).lower()
        if "no space left on device" in text or "database or disk is full" in text or "disk quota exceeded" in text:
            return True
    return False


# Message fragments of a row's unique key that a concurrent writer claimed first (PostgreSQL, SQLite, MySQL), as
# MLflow's server and its SQLAlchemy store word them. Matched on every exception of the chain, lower-cased.
DUPLICATE_KEY = ("duplicate key value violates unique constraint", "unique constraint failed", "duplicate entry")


def duplicate_key(exc: BaseException) -> bool:
    """Whether `exc` is an insert that lost a race for a row's unique key to another writer."""
    return any(fragment in str(e).lower() for e in _chain(exc) for fragment in DUPLICATE_KEY)


def transient(exc: BaseException) -> bool:
    """Whether `exc` is a store that is away for now (restarting, unreachable), not a wrong request."""
    if disk_full(exc):
        return False
    for e in _chain(exc):
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        text = str(e).lower()
        if any(fragment in text for fragment in TRANSIENT):
            return True
    return False


class _HandledHere(logging.Filter):
    """Drops MLflow's own ERROR log (with its traceback) of a store error that bench handles itself: a full
    disk (reported as one line) or a store that is away (retried). Other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not (disk_full(exc) or transient(exc))


logging.getLogger("mlflow.store.db.utils").addFilter(_HandledHere())
# MLflow 3.9 configures alembic's logger at INFO (3.17 sets WARNING itself): a store created in place (not by
# _build_sqlite_store) printed its migration steps on stderr.
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


def one_line(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}")


def free_mb(folder: Path) -> float:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / 2**20


def disk_full_error(where: Where) -> DiskFullError:
    folder = where.folder
    place = f"{folder} ({free_mb(folder):.1f} MB free)" if folder else "the server's disk"
    return DiskFullError(
        f"no space left on device for {where.what} in {place}: free at least {MIN_FREE_MB} MB there, then run the "
        f"same command again to resume (finished trials are kept; the interrupted ones rerun)"
    )


def need_free(folder: Path, what: str) -> None:
    """Refuse to start when `folder`'s filesystem has less than MIN_FREE_MB free."""
    if free_mb(folder) < MIN_FREE_MB:
        raise disk_full_error(Where(what, folder))


def retry_seconds() -> float:
    return float(os.environ.get("BENCH_STORE_RETRY_SECONDS") or RETRY_SECONDS)


def retrying(fn: Callable[[], T], where: Where, budget: float | None = None) -> T:
    """fn(), tried again with backoff while its store is away (see TRANSIENT), for up to `budget` seconds
    (default RETRY_SECONDS); a full disk becomes DiskFullError; any other error is raised at once."""
    budget = retry_seconds() if budget is None else budget
    deadline, delay, warned = time.monotonic() + budget, FIRST_DELAY, False
    while True:
        try:
            result = fn()
        except Exception as exc:
            if disk_full(exc):
                raise disk_full_error(where) from None
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            if not warned:
                print(f"warning: {where.what}: {one_line(exc)}; retrying for up to {budget:.0f} s", file=sys.stderr, flush=True)
                warned = True
            time.sleep(delay)
            delay = min(2 * delay, MAX_DELAY)
            continue
        if warned:
            print(f"{where.what}: reachable again", file=sys.stderr, flush=True)
        return result


# ---------------------------------------------------------------------- Optuna storage
class _AllOrNothingJournal(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, where an append that fails (a full disk) is cut back off: a torn line would
    make every later line of the journal unreadable."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        import json

        from optuna.storages.journal._file import get_lock_file  # the lock the base class takes (not reentrant)

        text = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock):
            size = os.path.getsize(self._file_path) if os.path.exists(self._file_path) else 0
            try:
                with open(self._file_path, "ab") as f:
                    f.write(text.encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                try:
                    os.truncate(self._file_path, size)
                except OSError:
                    pass
                raise


class _RetryingBase(optuna.storages.BaseStorage):
    def __init__(self, inner: optuna.storages.BaseStorage, where: Where):
        self.inner, self.where = inner, where

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        method = getattr(self.inner, name)
        attempts = [0]

        def call() -> Any:
            attempts[0] += 1
            try:
                return method(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A retry: the first try landed before its connection dropped, or another worker failed it (stale)
                if name == "set_trial_state_values" and attempts[0] > 1 and self._landed(args, kwargs):
                    return True
                raise

        return retrying(call, Where(f"{self.where.what} ({name})", self.where.folder))

    def _landed(self, args: tuple, kwargs: dict) -> bool:
        """Whether the trial of a set_trial_state_values(trial_id, state, values) call is in that state now."""
        bound = dict(zip(("trial_id", "state"), args), **kwargs)
        return self.inner.get_trial(bound["trial_id"]).state == bound["state"]


def _delegate(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, args, kwargs)

    method.__name__ = name
    return method


# Every public method of Optuna's storage interface, each forwarded under `retrying`.
RetryingStorage = type(
    "RetryingStorage",
    (_RetryingBase,),
    {
        name: _delegate(name)
        for name, fn in vars(optuna.storages.BaseStorage).items()
        if callable(fn) and not name.startswith("_")
    },
)


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    """An Optuna storage under retry: the URL given (sqlite:///, postgresql://, ...) or the default journal file.
    Checked now: an unreachable server, a folder that cannot be written or a full disk is one line (exit 2)."""
    if not url:
        folder = writable_dir(Path(DEFAULT_JOURNAL).parent, "the Optuna journal folder")
        need_free(folder, f"the Optuna journal {DEFAULT_JOURNAL}")
        storage = optuna.storages.JournalStorage(_AllOrNothingJournal(DEFAULT_JOURNAL))
        return RetryingStorage(storage, Where(f"the Optuna journal {DEFAULT_JOURNAL}", folder))
    folder = None
    if url.startswith("sqlite:///"):
        folder = writable_dir(Path(url[len("sqlite:///") :]).expanduser().parent, f"--storage {url} (its folder)")
        need_free(folder, f"the Optuna storage {url}")
    for attempt in range(4):
        try:
            # pool_pre_ping: a connection the server dropped (a restart) is replaced before use, not failed
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
            break
        except ImportError as exc:
            raise StoreError(
                f"cannot open Optuna storage {redact(url)}: {exc} (for PostgreSQL: pip install 'psycopg[binary]')"
            ) from None
        except Exception as exc:  # workers starting together on a new database race to create its tables
            if disk_full(exc):
                raise disk_full_error(Where(f"the Optuna storage {redact(url)}", folder)) from None
            if attempt == 3 or transient(exc) or "connection" in str(exc).lower():
                raise StoreError(f"cannot open Optuna storage {redact(url)}: {one_line(exc)}") from None
            time.sleep(1.0 + attempt)
    return RetryingStorage(storage, Where(f"the Optuna storage {redact(url)}", folder))


# ---------------------------------------------------------------------- MLflow store
class MLflowStore:
    """Where an MLflow tracking URI writes, and its checks before a study starts."""

    def __init__(self, uri: str):
        self.uri = uri
        self.sqlite = sqlite_path(uri)

    def describe(self, op: str) -> Where:
        return Where(f"the MLflow store {redact(self.uri)} ({op})", self.sqlite.parent if self.sqlite else None)

    def check(self) -> None:
        """Reachable (a server answers /health), writable (a SQLite file's folder, with free space), and a
        new SQLite store created whole. Raises TrackingError / DiskFullError with one line."""
        import urllib.request

        if self.uri.startswith(("http://", "https://")):
            try:
                urllib.request.urlopen(health_url(self.uri), timeout=5).close()
            except (OSError, ValueError) as exc:
                raise TrackingError(
                    f"cannot reach the MLflow tracking server at {redact(self.uri)} ({exc}); start it "
                    f"(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or pass another --tracking-uri"
                ) from None
        elif self.sqlite is not None:
            if not self.sqlite.parent.is_dir():
                raise TrackingError(f"MLflow SQLite store {self.uri}: folder {self.sqlite.parent} does not exist")
            writable_dir(self.sqlite.parent, f"the MLflow store {self.uri} (its folder)")
            need_free(self.sqlite.parent, f"the MLflow store {self.uri}")
            try:
                create_sqlite_store(self.sqlite)
            except Exception as exc:
                if disk_full(exc):
                    raise disk_full_error(self.describe("creating it")) from None
                raise TrackingError(f"cannot create the MLflow store {self.uri}: {one_line(exc)}") from None


def check_artifact_folder(location: str) -> None:
    """An experiment's artifact location, when it is a local folder: writable, with space (before training)."""
    if location.startswith("file://"):
        location = location[len("file://") :]
    if "://" in location or location.startswith("mlflow-artifacts:"):
        return  # served by the tracking server or a remote store: the server answers for it
    folder = writable_dir(location, "the MLflow artifact folder")
    need_free(folder, f"MLflow artifacts in {folder}")
