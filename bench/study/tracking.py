"""All MLflow logging in one place: an experiment per study, a parent run per study
execution, a child run per trial (params, tags, per-epoch metrics, the record as JSON)."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from bench.errors import BenchError

DEFAULT_URI = "sqlite:///mlflow.db"
BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


class TrackingError(BenchError):
    """The tracking store cannot be used; raised before any training starts (the CLI exits 2)."""


def check_tracking_uri(uri: str) -> None:
    """Fail fast, with a readable message, when the tracking store is unreachable."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).close()
        except (OSError, ValueError) as exc:
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {redact(uri)} ({exc}); start it "
                f"(e.g. `mlflow server --host 127.0.0.1 --port 5000`) or pass another --tracking-uri"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).expanduser().resolve().parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow SQLite store {uri}: folder {folder} does not exist")


@contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a SQLite store (a no-op for servers and other databases)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with open(Path(uri[len("sqlite:///") :]).expanduser().resolve().with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tracking_uri(cli_value: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else SQLite mlflow.db in the working directory."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def redact(url: str) -> str:
    """Hide the password in a URL such as postgresql://user:secret@host/db."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def experiment_name(study: str) -> str:
    return f"bench/{study}"


class Tracker:
    """Thin wrapper over MlflowClient; create it (and the experiment) before any worker trains."""

    def __init__(self, uri: str, study: str):
        self.uri = uri
        check_tracking_uri(uri)
        with _init_lock(uri):  # processes starting together on a new SQLite file would race its schema migration
            self.client = MlflowClient(tracking_uri=uri)
            name = experiment_name(study)
            try:
                exp = self.client.get_experiment_by_name(name)
            except Exception as exc:
                raise TrackingError(
                    f"cannot use MLflow tracking store {redact(uri)}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                ) from None
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(name, tags={"bench.study": study})
                except Exception:  # another worker (on another machine) created it first
                    self.experiment_id = self.client.get_experiment_by_name(name).experiment_id
            else:
                self.experiment_id = exp.experiment_id

    def start_run(self, name: str, tags: dict[str, str], params: dict[str, Any] | None = None, parent: str | None = None) -> str:
        tags = dict(tags, **({"mlflow.parentRunId": parent} if parent else {}))
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + BATCH])

    def log_dict(self, run_id: str, obj: Any, name: str) -> None:
        self.client.log_dict(run_id, obj, name)

    def end_run(self, run_id: str, status: str) -> None:
        """status: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status)

    def end_stale_runs(self, is_stale) -> int:
        """Mark RUNNING child runs whose worker is gone as FAILED; returns how many."""
        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=5000)
        n = 0
        for run in runs:
            if is_stale(run.data.tags.get("bench.host"), run.data.tags.get("bench.pid")):
                self.client.set_tag(run.info.run_id, "bench.failure", "worker died (stale RUNNING run)")
                self.client.set_terminated(run.info.run_id, "FAILED")
                n += 1
        return n


class RunLogger:
    """The `log_epoch` logger that train_trial calls: per-epoch metrics with step=epoch."""

    def __init__(self, tracker: Tracker, run_id: str, on_epoch=None):
        self.tracker, self.run_id, self.on_epoch = tracker, run_id, on_epoch

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)
        if self.on_epoch:
            self.on_epoch(epoch, metrics)


def worker_tags() -> dict[str, str]:
    return {"bench.host": socket.gethostname(), "bench.pid": str(os.getpid())}
