"""All MLflow logging in one place, and every `bench.*` tag name, each defined once.

An experiment per study, a parent run per study execution, a child run per trial (params, tags, per-epoch
metrics, the record as JSON); each call under stores.retrying.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE
from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from bench.errors import BenchError

from .stores import MLflowStore, duplicate_key, retrying
from .uris import client_uri, mlflow_client, redact, sqlite_path

DEFAULT_URI = "sqlite:///mlflow.db"
SYSTEM_METRICS_INTERVAL = 5.0  # seconds between samples of --system-metrics (MLflow's default is 10)
DATASET_TRIES = 3  # tries of log_inputs that lose the race for a dataset row to another worker (see Tracker.log_inputs)

# ---------------------------------------------------------------------- tag names (the only place they are spelled)
STUDY = "bench.study"  # study name, on every run and on the experiment
ARM = "bench.arm"  # arm name, e.g. "he+relu"
SEED = "bench.seed"
CLAIMS = "bench.claims"  # comma-separated claim ids the study answers
PROFILE = "bench.profile"  # smoke / quick / full
STAGE = "bench.stage"  # "tune" or "final" (trial runs only)
KIND = "bench.kind"  # "study" (a parent run) or "extra"
EXTRA = "bench.extra"  # the extra's name on a bench.kind=extra run
STATUS = "bench.status"  # the record's status ("ok", "diverged"), or "failed", "interrupted"
FAILURE = "bench.failure"  # why a run ended FAILED
OOM_RETRY = "bench.oom_retry"  # on a retry after running out of device memory: what was changed and why
PACKED = "bench.packed"  # trained together with this many trials (one vmap'd forward)
OPTUNA_STUDY = "bench.optuna_study"  # the Optuna study holding the run's trial, e.g. "init/smoke/final"
OPTUNA_TRIAL = "bench.optuna_trial"  # that trial's number
HOST = "bench.host"  # the worker that ran it: host name (BENCH_HOSTNAME overrides) ...
PID = "bench.pid"  # ... process id ...
TOKEN = "bench.worker_token"  # ... and a token of that process (liveness.WORKER_TOKEN): a reused pid is another worker
DATA_SOURCE = "bench.data_source"
DATA_DIGEST = "bench.data_digest"  # the data's identity (a study's runs in one store are all measured on one data set)
IMPORTED_FROM = "bench.imported_from"  # `bench import`: the bundle file and its label
ORIGIN_RUN_ID = "bench.origin_run_id"  # `bench import`: the run's id in the store that measured it
DEVICE = "bench.device"
GIT_COMMIT = "bench.git_commit"
FACTOR = "bench.factor."  # prefix: bench.factor.<factor> = this arm's level of it
TUNED = "bench.tuned_"  # prefix: final runs, bench.tuned_<param> = the arm's tuned value they used
TUNE = "bench.tune_"  # prefix: tuning runs, bench.tune_<param> = the value this trial tried
PARENT = "mlflow.parentRunId"  # MLflow's own: nests trial runs under the study execution's run
# MLflow 3 opens an experiment on the view its kind names; without the tag it guesses, and an experiment
# of training runs can land on the GenAI "Traces" overview. "custom_model_development" = the runs table.
EXPERIMENT_KIND = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"


class TrackingError(BenchError):
    """The tracking store cannot be used; raised before any training starts (the CLI exits 2)."""


def tracking_uri(cli_value: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else SQLite mlflow.db in the working directory."""
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def missing_store(uri: str) -> bool:
    """A SQLite store whose file does not exist (opening it would create an empty one)."""
    path = sqlite_path(uri)
    return path is not None and not path.exists()


def experiment_name(study: str) -> str:
    return f"bench/{study}"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


class Tracker:
    """Thin wrapper over MlflowClient; create it (and the experiment) before any worker trains.

    Every call goes through `stores.retrying`: a tracking server or database that restarts is waited for
    (the retry budget is stores.RETRY_SECONDS) and a full disk is one line naming the folder."""

    def __init__(self, uri: str, study: str):
        self.uri, self.study = uri, study
        self.store = MLflowStore(uri)
        self.store.check()  # reachable, credentials accepted, a SQLite file created whole
        self.client = mlflow_client(uri)
        name = experiment_name(study)
        try:
            exp = self._call(self.client.get_experiment_by_name, name)
        except BenchError:
            raise
        except Exception as exc:
            text = str(exc)
            if any(code in text for code in ("401", "Unauthorized", "403", "PERMISSION_DENIED", "UNAUTHENTICATED")):
                raise TrackingError(
                    f"the MLflow tracking server at {redact(uri)} refused the request ({_one_line(exc)[:120]}): it asks for "
                    f"a user and password; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or put them in "
                    f"~/.mlflow/credentials ([mlflow] mlflow_tracking_username/mlflow_tracking_password)"
                ) from None
            raise TrackingError(f"cannot use MLflow tracking store {redact(uri)}: {_one_line(exc)}") from None
        if exp is None:
            try:
                self.experiment_id = self._call(
                    self.client.create_experiment, name, tags={STUDY: study, EXPERIMENT_KIND: TRAINING_KIND}
                )
            except BenchError:
                raise
            except Exception:  # another worker (on another machine) created it first
                self.experiment_id = self._call(self.client.get_experiment_by_name, name).experiment_id
        else:
            self.experiment_id = exp.experiment_id
            if exp.tags.get(EXPERIMENT_KIND) != TRAINING_KIND:  # made before the tag existed, or by MLflow's guess
                self._call(self.client.set_experiment_tag, self.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)

    def _call(self, fn, *args, **kwargs):
        return retrying(lambda: fn(*args, **kwargs), self.store.describe(fn.__name__))

    def start_run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        start_time: int | None = None,  # ms since the epoch (an imported run keeps its own); default now
    ) -> str:
        tags = dict(tags, **({PARENT: parent} if parent else {}))
        run = self._call(self.client.create_run, self.experiment_id, start_time=start_time, run_name=name, tags=tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_batch(self, run_id: str, params: dict[str, Any] | None = None, metrics=(), tags: dict[str, Any] | None = None):
        """Params, metrics (mlflow Metric items) and tags in as few log_batch calls as MLflow accepts (at most 100
        params and 100 tags, 1000 entries in all, per call): each call is a store round trip."""
        p = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        t = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        m = list(metrics)
        while p or t or m:
            chunk_p, p = p[:MAX_PARAMS_TAGS_PER_BATCH], p[MAX_PARAMS_TAGS_PER_BATCH:]
            chunk_t, t = t[:MAX_PARAMS_TAGS_PER_BATCH], t[MAX_PARAMS_TAGS_PER_BATCH:]
            room = MAX_ENTITIES_PER_BATCH - len(chunk_p) - len(chunk_t)
            chunk_m, m = m[:room], m[room:]
            self._call(self.client.log_batch, run_id, metrics=chunk_m, params=chunk_p, tags=chunk_t)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.log_batch(run_id, params=params)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.log_batch(run_id, tags=tags)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, timestamp: int | None = None) -> None:
        self.log_batch(run_id, metrics=step_metrics(metrics, step, timestamp))

    def log_record(
        self, run_id: str, record: dict[str, Any], timestamp: int | None = None, params: dict[str, Any] | None = None, metrics=()
    ) -> None:
        """A finished trial's record: record.json, the tags of where and on what it ran, its summary metrics (and
        `params` and `metrics` not logged yet: an imported run's), in one log_batch where they fit."""
        self.log_dict(run_id, record, "record.json")
        summary = {k: record.get(k) for k in ("epochs_run", "seconds", "train_seconds", "images_per_s", "best_val_acc")}
        summary["diverged"] = float(record["status"] == "diverged")
        self.log_batch(
            run_id,
            params=params,
            metrics=[*metrics, *step_metrics(summary, int(record["epochs_run"]), timestamp)],
            tags={
                STATUS: record["status"],
                DATA_SOURCE: record["data_source"],
                DATA_DIGEST: record.get("data_digest", ""),
                DEVICE: record["device"],
                GIT_COMMIT: record["git_commit"],
                # MLflow's own source tags: the runs table's Source column and the run page's git commit
                MLFLOW_SOURCE_NAME: f"bench study {self.study}",
                MLFLOW_SOURCE_TYPE: "LOCAL",
                **({MLFLOW_GIT_COMMIT: record["git_commit"]} if record["git_commit"] != "unknown" else {}),
            },
        )
        if inputs := dataset_inputs(record):
            self.log_inputs(run_id, inputs)

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        """`inputs` linked to the run. MLflow looks up each dataset's row (one per experiment, name and digest)
        and inserts the missing ones in one transaction, so two workers that log the same split at the same
        moment both miss it and the second insert fails on the row's key (its transaction rolled back whole).
        The row is there by then: the next try links to it."""
        for attempt in range(DATASET_TRIES):
            try:
                self._call(self.client.log_inputs, run_id, inputs)
                return
            except Exception as exc:
                if attempt == DATASET_TRIES - 1 or not duplicate_key(exc):
                    raise

    def system_metrics(self, run_id: str):
        """MLflow's system metrics sampler on `run_id`, started: every SYSTEM_METRICS_INTERVAL seconds
        (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides) it logs system/* metrics; .finish() stops and flushes it."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not 4 INFO lines per trial
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL, tracking_uri=client_uri(self.uri))
        monitor.start()
        return monitor

    def log_dict(self, run_id: str, obj: Any, name: str) -> None:
        self._call(self.client.log_dict, run_id, obj, name)

    def end_run(self, run_id: str, status: str, end_time: int | None = None) -> None:
        """status: FINISHED, FAILED or KILLED; end_time in ms since the epoch (default now)."""
        self._call(self.client.set_terminated, run_id, status, end_time)

    def fail_run(self, run_id: str, reason: str, status: str = "FAILED", label: str = "failed") -> None:
        """End a run that did not finish, saying why (bench.status = `label`, bench.failure = `reason`)."""
        self.set_tags(run_id, {STATUS: label, FAILURE: reason})
        self.end_run(run_id, status)

    def search(self, query: str) -> list:
        """Every run of the study's experiment that `query` (an MLflow filter string) matches, all pages."""
        runs, token = [], None
        while True:
            page = self._call(self.client.search_runs, [self.experiment_id], query, max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def data_digests(self, profile: str) -> dict[str, str]:
        return store_digests(self.uri, self.study, profile)

    def running_runs(self, extra_filter: str = "") -> list:
        query = "attributes.status = 'RUNNING'" + (f" AND {extra_filter}" if extra_filter else "")
        return self._call(self.client.search_runs, [self.experiment_id], query, max_results=5000)

    def find_finished(self, tags: dict[str, str]) -> bool:
        """Whether a FINISHED run with these tags exists (an extra already measured)."""
        query = " AND ".join([f"tags.`{k}` = '{v}'" for k, v in tags.items()] + ["attributes.status = 'FINISHED'"])
        return bool(self._call(self.client.search_runs, [self.experiment_id], query, max_results=1))

    def end_runs_of_worker(self, host: str, pid: str, token: str | None, reason: str) -> int:
        """End every RUNNING run of the worker (host, pid, token) FAILED with `reason` (the worker is gone). A
        process that has the same host and pid now (a restarted container) has another token: its runs stay."""
        runs = self.running_runs(f"tags.`{HOST}` = '{host}' AND tags.`{PID}` = '{pid}'")
        runs = [r for r in runs if r.data.tags.get(TOKEN) == (token or None)]
        for run in runs:
            self.fail_run(run.info.run_id, reason)
        return len(runs)


def step_metrics(metrics: dict[str, float | None], step: int, timestamp: int | None = None) -> list[Metric]:
    """{name: value} at one step as MLflow Metric items (a None value is left out), stamped `timestamp` (ms; default now)."""
    now = timestamp or int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]


def store_digests(uri: str, study: str, profile: str) -> dict[str, str]:
    """{data digest: data source} of the finished runs of `study` at `profile` in the store at `uri` (runs from
    before the digest tag have none and do not count); nothing is created where the study has no experiment."""
    client = mlflow_client(uri)
    exp = retrying(lambda: client.get_experiment_by_name(experiment_name(study)), MLflowStore(uri).describe("search"))
    if exp is None:
        return {}
    query = f"attributes.status = 'FINISHED' AND tags.`{PROFILE}` = '{profile}' AND tags.`{DATA_DIGEST}` != ''"
    runs = retrying(lambda: client.search_runs([exp.experiment_id], query, max_results=5000), MLflowStore(uri).describe("search"))
    return {r.data.tags[DATA_DIGEST]: r.data.tags.get(DATA_SOURCE, "") for r in runs}


def prepare_ui(uri: str) -> int:
    """Before `bench ui`: a new SQLite store created whole (no UI process migrates it), and every bench/*
    experiment tagged as training runs (those made before the tag existed). Returns how many were tagged."""
    MLflowStore(uri).check()
    client = mlflow_client(uri)
    n = 0
    for exp in client.search_experiments(filter_string="name LIKE 'bench/%'", max_results=1000):
        if exp.tags.get(EXPERIMENT_KIND) != TRAINING_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
            n += 1
    return n


SPLITS = (("train", "n_train_used"), ("validation", "n_val_used"), ("test", "n_test_used"))


def dataset_inputs(record: dict[str, Any]) -> list[DatasetInput]:
    """The trial's data as MLflow dataset inputs (the runs table's Dataset column): one per split it used, named
    "CIFAR-10 <split>", its digest from the data's digest, the task and the split's size, its source the data
    the record names (the torchvision download or an ImageFolder copy), its profile the number of images."""
    out = []
    for context, key in SPLITS:
        n = record.get(key)
        if not isinstance(n, (int, float)) or not n > 0:  # absent, 0, or NaN (a bundle's empty cell)
            continue
        task = record.get("config.task", "classify")
        identity = f"{record.get('data_digest', '')}/{task}/{context}/{n}"
        dataset = Dataset(
            name=f"CIFAR-10 {context}",
            digest=hashlib.sha256(identity.encode()).hexdigest()[:16],
            source_type="local",
            source=json.dumps({"uri": record["data_source"], "data_digest": record.get("data_digest", ""), "task": task}),
            profile=json.dumps({"num_rows": int(n)}),
        )
        out.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    return out


class RunLogger:
    """The `log_epoch` logger that the training engine calls: per-epoch metrics with step=epoch."""

    def __init__(self, tracker: Tracker, run_id: str, on_epoch=None, guard=contextlib.nullcontext):
        self.tracker, self.run_id, self.on_epoch = tracker, run_id, on_epoch
        self.guard = guard  # a context the writes happen in (the time budget's shield: a deadline waits for them)

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        with self.guard():
            self.tracker.log_metrics(self.run_id, metrics, step=epoch)
            if self.on_epoch:
                self.on_epoch(epoch, metrics)
