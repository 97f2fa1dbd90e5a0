"""`make reference` end to end on real smoke runs (one study, two seeds, in temporary folders): fresh stores, the
bundle (`bench export`), the README summary; then `bench report --results <bundle>` gives the same summary table
as the report built from the MLflow store the bundle came from. Needs CIFAR-10 (skipped with the reason otherwise)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, real_data_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        real_data_dir() is None, reason="no CIFAR-10 here: set BENCH_DATA_DIR (CI uses ../shared/data/cifar10-jpeg)"
    ),
]

STUDY = "dropout"
ARMS = ["p0.0", "p0.5", "p0.5-classic", "p0.5-unscaled"]  # the arms the dropout analysis compares


def smoke_with_two_seeds(folder: Path) -> Path:
    """A copy of studies/ whose dropout smoke profile runs two seeds of the analysed arms (so verdicts have tests)."""
    folder.mkdir()
    for path in (ROOT / "studies").glob("*.toml"):
        (folder / path.name).write_text(path.read_text())
    text = (ROOT / "studies" / f"{STUDY}.toml").read_text()
    head, rest = text.split("[profiles.smoke]", 1)
    body, tail = rest.split("[profiles.", 1)
    base = next((line for line in body.splitlines() if line.startswith("base")), "")
    factor = re.search(r"\[factors\.([\w-]+)\]", text).group(1)
    arms = [a for a in ARMS if f'"{a}"' in text or f"\n{a} " in text] or []
    smoke = f"[profiles.smoke]\nseeds = 2\n{base}\n" + (f"arms = {{ {factor} = {json.dumps(arms)} }}\n" if arms else "")
    (folder / f"{STUDY}.toml").write_text(head + smoke + "\n[profiles." + tail)
    return folder


def summary_table(report_md: Path) -> list[str]:
    """The summary table's rows of a report.md (the header lines above it name the source, which differs)."""
    lines = report_md.read_text().splitlines()
    start = lines.index("## Summary") + 2
    return lines[start : lines.index("", start)]


def test_make_reference_then_report_from_the_bundle_matches_the_store(tmp_path):
    studies, work, ref = smoke_with_two_seeds(tmp_path / "studies"), tmp_path / "work", tmp_path / "ref"
    env = {**os.environ, "BENCH_STUDIES_DIR": str(studies), "BENCH_DATA_DIR": real_data_dir()}
    make = ["make", "-C", str(ROOT), "reference", "STAMP=", f"REF_STUDIES={STUDY}", "REF_PROFILE=smoke", "WORKERS=1"]
    done = subprocess.run(
        make + [f"REF_WORK={work}", f"REF_DIR={ref}", f"VENV={Path(sys.executable).parents[1]}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    bundle = ref / "smoke.json.gz"
    assert "exported" in done.stdout and bundle.exists() and (ref / "summary.md").exists()

    doc = json.load(gzip.open(bundle))  # pandas alone reads it: no MLflow
    runs = pd.DataFrame(doc["runs"])
    finals = runs[runs["stage"] == "final"]
    assert doc["label"] == "reference" and set(runs["study"]) == {STUDY}
    assert len(finals) == 2 * finals["arm"].nunique() and finals["test_acc"].notna().any()
    meta = doc["studies"][STUDY]
    assert meta["profile"] == "smoke" and meta["definition"]["seeds"] == 2 and meta["provenance"]["final_runs"] == len(finals)
    assert meta["provenance"]["device"] and meta["provenance"]["data_digest"] and meta["provenance"]["torch_version"]
    summary = (ref / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| ")]
    assert len(rows) == 22 and f"| {STUDY} | **" in summary and "smoke · " in summary  # a header and 21 claims

    bench = [sys.executable, "-m", "bench", "report", "--study", STUDY]
    from_store = subprocess.run(
        bench + ["--results", "mlflow", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--out", str(tmp_path / "a")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    from_bundle = subprocess.run(
        bench + ["--results", str(bundle), "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=300
    )
    assert from_store.returncode == 0 and from_bundle.returncode == 0, from_store.stderr[-1000:] + from_bundle.stderr[-1000:]
    store_rows, bundle_rows = summary_table(tmp_path / "a" / "report.md"), summary_table(tmp_path / "b" / "report.md")
    assert store_rows == bundle_rows and any(f"[{STUDY}]" in r for r in store_rows)
    row = next(r for r in store_rows if f"[{STUDY}]" in r)
    assert "not yet measured" not in row and row.rstrip(" |").endswith("| 2")  # two seeds per arm: tests decide it
