"""scripts/gpu-slot on the CPU at --profile smoke: a slot hands back a bundle that the next slot (another output
folder, fresh stores) imports and goes on from, until the studies are complete; gpu-check runs once per code version."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bench.perf.gpucheck import code_version
from bench.study.bundles import read_bundle

from conftest import ROOT

SLOT = ROOT / "scripts" / "gpu-slot"


def slot(reference: Path, out: Path, data_dir: str, *extra: str) -> str:
    env = os.environ | {"BENCH_DATA_DIR": data_dir}
    args = [str(SLOT), "--profile", "smoke", "--limit", "90", "--margin", "10", "--reference", str(reference), "--out", str(out)]
    proc = subprocess.run([*args, *extra], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "slot.log").read_text()
    assert proc.stdout in log  # everything it printed is in the log it hands back
    return log


@pytest.mark.slow
def test_the_next_slot_goes_on_from_the_bundle_the_last_one_handed_back(tmp_path: Path, data_dir):
    """(Cutting a study mid-way at the deadline and going on: tests/test_deadline.py.)"""
    none = tmp_path / "none"
    none.mkdir()
    first = slot(none, tmp_path / "out1", data_dir, "--studies", "init", "--check", "never")
    assert "gpu-check skipped (never" in first and not (tmp_path / "out1" / "gpu-check.json").exists()
    assert "study init (smoke): 12/12 trials finished" in first and "done: commit" in first
    second = slot(tmp_path / "out1", tmp_path / "out2", data_dir, "--studies", "init,normalization", "--check", "never")
    assert f"import {tmp_path / 'out1'}/smoke.json.gz" in second
    assert "study init (smoke) is complete: 12/12 trials finished; nothing to run" in second  # carried, not rerun
    assert "study normalization (smoke): 8/8 trials finished" in second
    assert second.index("[gpu-slot") < second.index("study init") < second.index("study normalization")  # priority order
    finals = read_bundle(tmp_path / "out2" / "smoke.json.gz").runs.query("stage == 'final'")
    assert finals.groupby("study").size().to_dict() == {"init": 12, "normalization": 8}
    assert not finals.duplicated(["study", "arm", "seed"]).any()


@pytest.mark.slow
def test_gpu_check_is_skipped_when_the_reference_has_one_for_this_code_version(tmp_path: Path, data_dir):
    reference = tmp_path / "ref"
    reference.mkdir()
    (reference / "gpu-check.json").write_text(json.dumps({"code_version": code_version()}))
    # a limit that leaves no time for a study: what is tested is the decision before them (a study run is above)
    log = slot(reference, tmp_path / "out", data_dir, "--studies", "pca", "--limit", "12")
    assert f"gpu-check skipped (auto; the reference has one for code version {code_version()})" in log
    assert "time is up before pca" in log and "nothing to export (no run finished)" in log
    proc = subprocess.run([str(SLOT), "--check", "sometimes"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--check" in proc.stderr
