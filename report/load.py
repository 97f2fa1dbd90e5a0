"""Load the runs DataFrame (columns: see report/frame.py) and the study extras (format: report/frame.py,
"Extras") from an MLflow tracking store."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from bench.study.uris import mlflow_client

DEFAULT_UI = "http://127.0.0.1:5000"  # where `bench ui` serves the MLflow UI
REPORT_EXPERIMENT = "bench/report"  # report builds are logged here; not a study


def ui_base() -> str:
    """Base URL of the MLflow UI used in links: $BENCH_MLFLOW_UI, else `bench ui`'s default."""
    return os.environ.get("BENCH_MLFLOW_UI", DEFAULT_UI).rstrip("/")


def run_url(experiment_id: str, run_id: str, ui: str | None = None) -> str:
    return f"{ui or ui_base()}/#/experiments/{experiment_id}/runs/{run_id}"


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "None") else float("nan")
    except ValueError:
        return float("nan")


def flatten(
    record: dict[str, Any],
    run_id: str,
    experiment_id: str,
    tags: dict[str, str],
    start_time: int,
    run_name: str = "",
    ui: str | None = None,
) -> dict[str, Any]:
    """One DataFrame row from a trial record and its run's tags (columns: report/frame.py)."""
    row = {k: v for k, v in record.items()}
    row.update(
        {
            "run_id": run_id,
            "experiment_id": str(experiment_id),
            "run_name": run_name,
            "url": run_url(experiment_id, run_id, ui),
            "start_time": int(start_time or 0),
            "study": tags.get("bench.study"),
            "arm": tags.get("bench.arm"),
            "seed": int(tags.get("bench.seed", record.get("config.seed", 0))),
            "stage": tags.get("bench.stage"),
            "profile": tags.get("bench.profile"),
            "claims": tags.get("bench.claims", ""),
            "tuned_lr": _float(tags.get("bench.tuned_lr")),
            "tune_lr": _float(tags.get("bench.tune_lr")),
            "git_commit": record.get("git_commit") or tags.get("bench.git_commit"),
            "optuna_trial": _float(tags.get("bench.optuna_trial")),
            "origin_run_id": tags.get("bench.origin_run_id") or run_id,  # an imported run: the id where it was measured
        }
    )
    row.update({f"factor.{k[len('bench.factor.') :]}": v for k, v in tags.items() if k.startswith("bench.factor.")})
    return row


def _experiments(client: MlflowClient, study: str | None) -> list:
    """The studies' experiments ("bench/<study>"; only `study`'s when given), not the report's."""
    return [
        e
        for e in client.search_experiments(filter_string="name LIKE 'bench/%'")
        if e.name != REPORT_EXPERIMENT and (study is None or e.name == f"bench/{study}")
    ]


def study_file_params(tracking_uri: str) -> dict[str, str]:
    """{study: the study file its newest execution read} (param `study_file` of the parent runs, bench.kind=study)."""
    client = mlflow_client(tracking_uri)
    ids = [e.experiment_id for e in _experiments(client, None)]
    runs = (
        client.search_runs(ids, "tags.`bench.kind` = 'study'", max_results=5000, order_by=["attributes.start_time ASC"])
        if ids
        else []
    )
    return {
        r.data.tags["bench.study"]: r.data.params["study_file"]
        for r in runs
        if "bench.study" in r.data.tags and "study_file" in r.data.params
    }


def _trial_runs(client: MlflowClient, experiment_ids: list[str]):
    token = None
    while True:
        page = client.search_runs(experiment_ids, "attributes.status = 'FINISHED'", max_results=1000, page_token=token)
        for run in page:
            if run.data.tags.get("bench.stage") in ("tune", "final"):
                yield run
        token = page.token
        if not token:
            return


def load_runs(tracking_uri: str, study: str | None = None, ui: str | None = None) -> pd.DataFrame:
    """Every finished trial run of every study (or of `study`) with its record.json, one row each.

    Where one (study, profile, stage, arm, seed) was run more than once (a study rerun
    into a fresh Optuna storage), final runs keep the newest; tune runs are all kept.
    """
    client = mlflow_client(tracking_uri)
    exps = _experiments(client, study)
    with _no_download_bars():
        rows, unread = _records(client, exps, ui)
    if unread:  # e.g. a store copied without its artifact folder: say so rather than report fewer runs silently
        print(
            f"warning: {unread} of {unread + len(rows)} finished trial runs have no readable record.json (their artifacts "
            f"are missing or were moved: {exps[0].artifact_location} ...); the report leaves them out",
            file=sys.stderr,
            flush=True,
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values("start_time")
    key = ["study", "profile", "stage", "arm", "seed"]
    final = df[df["stage"] == "final"].drop_duplicates(key, keep="last")
    return pd.concat([final, df[df["stage"] != "final"]]).sort_values(["study", "stage", "start_time"]).reset_index(drop=True)


@contextmanager
def _no_download_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded artifact (one per record.json) unless told not to."""
    quiet = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if quiet is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = quiet


def _records(client: MlflowClient, exps: list, ui: str | None) -> tuple[list[dict[str, Any]], int]:
    """The flattened records of the finished trial runs, and how many had no readable record.json."""
    rows, unread = [], 0
    if exps:
        with tempfile.TemporaryDirectory() as tmp:
            for run in _trial_runs(client, [e.experiment_id for e in exps]):
                try:
                    path = client.download_artifacts(run.info.run_id, "record.json", tmp)
                except Exception:  # a finished run without its record (artifacts moved, logging interrupted)
                    unread += 1
                    continue
                with open(path) as f:
                    record = json.load(f)
                os.remove(path)
                rows.append(
                    flatten(
                        record,
                        run.info.run_id,
                        run.info.experiment_id,
                        run.data.tags,
                        run.info.start_time,
                        run.info.run_name or "",
                        ui,
                    )
                )
    return rows, unread


def _extra_runs(client: MlflowClient, experiment_ids: list[str]):
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, "attributes.status = 'FINISHED' and tags.`bench.kind` = 'extra'", max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def load_extras(tracking_uri: str, study: str | None = None, ui: str | None = None) -> dict[str, dict[str, Any]]:
    """The study extras (format: report/frame.py, "Extras"): for each study and extra name (tags bench.study,
    bench.extra) the newest FINISHED run tagged bench.kind=extra, its artifact `<extra>.json` parsed, plus
    "run_id", "url" and "start_time". A run without its artifact is skipped (an older one may stand in)."""
    client = mlflow_client(tracking_uri)
    exps = _experiments(client, study)
    if not exps:
        return {}
    runs = sorted(_extra_runs(client, [e.experiment_id for e in exps]), key=lambda r: -(r.info.start_time or 0))
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, _no_download_bars():
        for run in runs:  # newest first: the first readable run of each (study, extra) wins
            name, owner = run.data.tags.get("bench.extra"), run.data.tags.get("bench.study")
            if not name or not owner or name in out.get(owner, {}):
                continue
            try:
                path = client.download_artifacts(run.info.run_id, f"{name}.json", tmp)
                with open(path) as f:
                    payload = json.load(f)
            except Exception:  # logging interrupted, or not JSON: nothing to show from this run
                continue
            payload.update(
                run_id=run.info.run_id,
                url=run_url(run.info.experiment_id, run.info.run_id, ui),
                start_time=int(run.info.start_time or 0),
            )
            out.setdefault(owner, {})[name] = payload
    return out
