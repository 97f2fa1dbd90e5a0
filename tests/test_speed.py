"""`bench speed` and `bench gpu-check` run end to end on the CPU (tiny sizes) and print their tables."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # whole studies, subprocesses or servers


def _bench(tmp_path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def test_speed_prints_table_and_ratios(tmp_path, data_dir):
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
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.split() and ln.split()[0] in ("naive", "pipeline", "packed")}
    assert set(rows) == {"naive", "pipeline", "packed"}
    for cells in rows.values():
        assert float(cells[2]) > 0 and float(cells[5]) > 0  # images/s and peak RSS
    ratios = {ln.split(":")[0]: float(ln.split()[1]) for ln in lines if ln.startswith(("speedup_vs_naive:", "packed_speedup:"))}
    assert set(ratios) == {"speedup_vs_naive", "packed_speedup"} and all(v > 0 for v in ratios.values())


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
    assert [ln.split()[:2] for ln in tail[1:]] == [["speed", "cnn"], ["speed", "resnet20"]]
    assert all("s/epoch" in ln and "speedup_vs_naive" in ln for ln in tail[1:])
