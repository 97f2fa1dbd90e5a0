"""End to end: a real smoke study (bench study init --profile smoke) in an MLflow store, then `bench report`
from it: HTML + Markdown + figures, every section, run links, and the report logged as an MLflow run. Needs
CIFAR-10 (skipped with the reason otherwise)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from bench.claims import CLAIMS

pytestmark = pytest.mark.slow  # whole studies, subprocesses or servers


def test_smoke_study_through_mlflow_to_html(tmp_path, smoke_study):
    folder, proc = smoke_study("init")  # `bench study init --profile smoke`, run once per session
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the report is logged into the store it reads: a copy of the session's, which other tests read as it is
    shutil.copy(folder / "mlflow.db", tmp_path / "mlflow.db")
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    report = ["report", "--out", str(out), "--tracking-uri", uri, "--results", "mlflow"]  # the store alone
    done = subprocess.run(
        [sys.executable, "-m", "bench", *report], cwd=tmp_path, check=True, timeout=600, capture_output=True, text=True
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
