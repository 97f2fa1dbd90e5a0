"""`bench speed` and `bench gpu-check` run end to end on the CPU (tiny sizes) and print their tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # whole studies, subprocesses or servers


def _bench(tmp_path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`bench ...` with a cache of its own (the speed table it writes stays in the test), sharing the decoded images."""
    from bench.data import cache_dir

    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    for f in cache_dir().glob("cifar10-*.pt"):
        if not (cache / f.name).exists():
            (cache / f.name).symlink_to(f)
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_speed_prints_table_and_ratios(tmp_path, data_dir, bench_cli):
    proc = _bench(
        tmp_path,
        "speed",
        "--quick",
        "--n-train",
        "500",
        "--epochs",
        "2",
        "--packs",
        "1,2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--data-dir",
        data_dir,
        "--json",
        "speed.json",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split() and ln.split()[0] in ("naive", "eager", "vmap")}
    assert set(rows) == {"naive", "eager", "vmap"}
    for name, cells in rows.items():
        cells = cells[1:] if name == "vmap" else cells  # "vmap 2": the label has two words
        assert float(cells[2]) > 0 and float(cells[7]) > 0  # images/s and peak RSS
    ratios = {ln.split(":")[0]: float(ln.split()[1]) for ln in lines if ln.startswith(("speedup_vs_naive:", "packed_speedup:"))}
    assert set(ratios) == {"speedup_vs_naive", "packed_speedup"} and all(v > 0 for v in ratios.values())
    table = json.loads((tmp_path / "speed.json").read_text())
    rows = table["models"]["cnn"]["rows"]
    assert [r["label"] for r in rows] == ["naive", "eager", "vmap 2"] and table["models"]["cnn"]["macs"] > 1e6
    # the same table lands in the cache, where `bench study --plan` reads it
    plan = ("study", "resnet-depth", "--plan", "--profile", "smoke", "--device", "cpu")  # conv nets, like the CNN
    code, out, err = bench_cli(*plan, env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert code == 0 and "estimate from: bench speed on cpu" in out, out + err


def test_speed_rejects_bad_input_in_one_line(tmp_path):
    for args, message in (
        (["--model", "vgg"], "unknown model 'vgg'"),
        (["--n-train", "15"], "multiple of 10"),
        (["--packs", "0,2"], "pack sizes must be >= 1"),
        (["--epochs", "1"], "warm-up"),
    ):
        proc = _bench(tmp_path, "speed", *args, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_gpu_check_without_a_gpu_says_so(tmp_path):
    proc = _bench(tmp_path, "gpu-check", timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_check_runs_on_the_cpu_and_ends_with_its_table(tmp_path, data_dir):
    proc = _bench(
        tmp_path, "gpu-check", "--device", "cpu", "--n-train", "200", "--epochs", "2", "--studies", "", "--data-dir", data_dir
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tail = proc.stdout[proc.stdout.index("gpu-check summary") :].splitlines()
    assert [ln.split()[:2] for ln in tail[1:]] == [["speed", "resnet20"], ["speed", "cnn"]]
    assert all("s/epoch" in ln and "speedup_vs_naive" in ln for ln in tail[1:])
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert set(report["speed"]) == {"resnet20", "cnn"} and report["table"][0][0] == "speed resnet20"
