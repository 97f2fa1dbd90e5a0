"""End to end: a real smoke study (bench study init --profile smoke) into a temporary MLflow
store, then `bench report` from it: HTML + Markdown + figures, every section, run links,
and the report logged as an MLflow run. Needs CIFAR-10 (skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.claims import CLAIMS

pytestmark = pytest.mark.slow  # whole studies, subprocesses or servers

SHARED_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def data_dir() -> str | None:
    env = os.environ.get("BENCH_DATA_DIR")
    if env and Path(env).exists():
        return env
    return str(SHARED_JPEG) if SHARED_JPEG.exists() else None


@pytest.mark.skipif(data_dir() is None, reason="no CIFAR-10 here: set BENCH_DATA_DIR (CI uses ../shared/data/cifar10-jpeg)")
def test_smoke_study_through_mlflow_to_html(tmp_path):
    uri, storage, out = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "out"
    env = {**os.environ, "BENCH_DATA_DIR": data_dir()}
    bench = [sys.executable, "-m", "bench"]
    subprocess.run(
        bench + ["study", "init", "--profile", "smoke", "--tracking-uri", uri, "--storage", storage, "--no-progress"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=900,
        capture_output=True,
    )
    done = subprocess.run(
        bench + ["report", "--out", str(out), "--tracking-uri", uri, "--results", "mlflow"],  # the store alone
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert f"report written: {out / 'index.html'}" in done.stdout

    html = (out / "index.html").read_text()
    for cid in CLAIMS:
        assert f'id="claim-{cid}"' in html
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench/init")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("bench.stage") == "final"]
    assert trials
    for run in trials:  # every trial is linked from the report
        assert f"#/experiments/{exp.experiment_id}/runs/{run.info.run_id}" in html
    assert trials[0].data.tags["bench.data_source"] in html
    assert (out / "report.md").exists() and any((out / "figures").glob("init-*.png"))
    assert "fewer than 2 seeds per arm" in html  # smoke has one seed: every measured verdict is inconclusive
    assert "smoke · " in html and "small scale" in html  # each verdict states its scale
    # the study's runs table in the MLflow UI, in its "model training" view (not MLflow 3's GenAI overview)
    assert f'#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"' in html

    reports = client.search_runs([client.get_experiment_by_name("bench/report").experiment_id])
    assert len(reports) == 1 and reports[0].data.tags["verdict.zero-init"] == "inconclusive"
    logged = {a.path for a in client.list_artifacts(reports[0].info.run_id, "report")}
    assert {"report/index.html", "report/report.md", "report/figures"} <= logged
