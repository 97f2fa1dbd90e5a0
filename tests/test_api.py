"""The Python API (bench/api.py, report/__init__.py): each call gives what its command gives, errors are the
commands' one-line errors, `import bench` stays light, and the README's example runs as written."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bench
import report
from bench.errors import BenchError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "reference" / "quick.json.gz"


def readme_python() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.M | re.S)
    assert len(blocks) == 1, "the README shows one Python example"
    return blocks[0]


def test_importing_bench_and_report_loads_no_torch_optuna_or_mlflow():
    code = "import sys, bench, report; print(sorted(m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    assert set(bench.API) <= set(dir(bench)) and callable(bench.train)
    with pytest.raises(AttributeError):
        bench.no_such_name  # noqa: B018


def test_plan_is_what_the_command_writes(bench_cli):
    code, out, _ = bench_cli("study", "init", "--plan", "--profile", "smoke", "--device", "cpu", "--json", "-")
    assert code == 0 and bench.plan("init", profile="smoke", device="cpu") == json.loads(out)


def test_errors_are_the_commands_one_line_errors():
    with pytest.raises(BenchError, match="no_such_key"):
        bench.train(no_such_key=1)
    with pytest.raises(BenchError, match="profile 'huge'"):
        bench.run_study("init", profile="huge")
    with pytest.raises(TypeError, match="workrs"):
        bench.run_study("init", workrs=2)
    assert {"workers", "tracking_uri", "storage", "time_budget", "export", "no_progress"} <= set(bench.api.study_options())


def test_train_returns_the_record(data_dir):
    record = bench.train(model="mlp", depth=1, width=32, epochs=1, n_train=500, n_val=100, n_test=100, data_dir=data_dir)
    assert record["status"] == "ok" and math.isfinite(record["test_acc"]) and record["config.width"] == 32
    assert record["n_train_used"] == 500 and len(record["history.val_acc"]) == 2  # at init and after epoch 1


def test_verdicts_are_the_reports_rows_and_stay_callable():
    first = report.verdicts([str(SHIPPED)], study="init")
    again = report.verdicts([str(SHIPPED)], study="init")  # a submodule of the same name must not shadow it
    assert first.equals(again) and set(first["claim"]) == {"zero-init", "small-init-vanish", "xavier-vs-he"}
    assert first["verdict"].notna().all() and (first["seeds_per_arm"] >= 2).all()


def test_a_bundle_reads_as_its_runs_and_as_the_reports_frame():
    runs = bench.read_bundle(str(SHIPPED))
    assert len(runs) > 300 and {"study", "arm", "seed", "stage", "test_acc"} <= set(runs.columns)
    init = bench.read_bundle(str(SHIPPED), study="init")
    assert len(init) and set(init["study"]) == {"init"}
    framed = report.read_bundle(str(SHIPPED), study="init")
    assert len(framed) == len(init) and "url" in framed.columns


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, data_dir):
    (tmp_path / "results").symlink_to(ROOT / "results")  # the example's paths are the project root's
    env = {**os.environ, "BENCH_DATA_DIR": data_dir, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run(
        [sys.executable, "-c", readme_python()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\d+ trials, about \d+ s here$", proc.stdout, flags=re.M)
    assert re.search(r"^ok 0\.\d+", proc.stdout, flags=re.M)
    assert "xavier+relu+d10" in proc.stdout and re.search(r"^\s*xavier-vs-he\s+supported", proc.stdout, flags=re.M)
    finals = report.load_runs(env["MLFLOW_TRACKING_URI"], study="init")
    assert set(finals[finals["stage"] == "final"]["arm"]) and (tmp_path / "optuna" / "studies.journal").exists()
