"""`bench gpu-check` (`make gpu-check`): one command for a machine with a GPU. Prints the device,
runs `bench speed` for the small CNN and ResNet-20, smoke-runs every core study (device=auto: the GPU)
in a temporary folder with its own stores, and prints a short table last."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CORE_STUDIES = ("init", "activation", "optimizer", "dropout", "batchnorm", "resnet-depth")
RESNET_EPOCH_TARGET_S = 1.0  # issue target: one ResNet-20 epoch on full CIFAR-10 on an H100
PACKED_TARGET = 3.0  # packed aggregate over sequential throughput for ResNet-20-sized models
STUDY_TIMEOUT_S = 600  # a smoke study takes about a minute; ten means something is stuck


def run_gpu_check(
    device: str = "cuda",
    n_train: int | None = None,
    epochs: int = 3,
    studies: tuple[str, ...] = CORE_STUDIES,
    data_dir: str | None = None,
    out=sys.stdout,
) -> int:
    import torch

    from bench.engine.loop import resolve_device

    from .speed import run_speed, summary

    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"gpu-check: device {dev} ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}", file=out, flush=True)
    table: list[tuple[str, str, str]] = []
    for model, packs in (("cnn", (1, 4, 8)), ("resnet20", (1, 4, 8))):
        t0 = time.perf_counter()
        buf = io.StringIO()
        rows = run_speed(
            model,
            str(dev),
            packs=packs,
            n_train=n_train,
            epochs=epochs,
            data_dir=data_dir,
            compile=dev.type == "cuda" and model == "resnet20",
            out=_Tee(out, buf),
        )
        ratios = summary(rows)
        pipe = next((r for r in rows if r["variant"] == "pipeline" and "error" not in r), None)
        if pipe is None:
            table.append((f"speed {model}", "failed", next((r["error"] for r in rows if "error" in r), "")))
            continue
        detail = f"{pipe['seconds_per_epoch']:.2f} s/epoch, {pipe['images_per_s']:.0f} img/s"
        detail += "".join(f", {k} {v:.2f}" for k, (v, _) in ratios.items())
        verdict = "ok"
        if model == "resnet20" and dev.type == "cuda" and not n_train:
            met = pipe["seconds_per_epoch"] <= RESNET_EPOCH_TARGET_S and ratios.get("packed_speedup", (0,))[0] >= PACKED_TARGET
            verdict = "target met" if met else "target missed"
        table.append((f"speed {model}", verdict, detail + f" ({time.perf_counter() - t0:.0f} s)"))
    # the studies run in a temporary folder: give them the data folder as an absolute path
    data_dir = str(Path(data_dir or os.environ.get("BENCH_DATA_DIR") or "data").resolve())
    with tempfile.TemporaryDirectory(prefix="bench-gpu-check-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        for study in studies:
            t0 = time.perf_counter()
            cmd = [
                sys.executable,
                "-m",
                "bench",
                "study",
                study,
                "--profile",
                "smoke",
                "--no-progress",
                "--storage",
                f"sqlite:///{tmp}/optuna.db",
                "--data-dir",
                data_dir,
            ]
            try:
                proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                table.append((f"smoke {study}", "timed out", f"over {STUDY_TIMEOUT_S} s"))
                continue
            seconds = time.perf_counter() - t0
            last = (proc.stdout.strip().splitlines() or [""])[-1]
            err = (proc.stderr.strip().splitlines() or [""])[-1]
            table.append(
                (
                    f"smoke {study}",
                    "ok" if proc.returncode == 0 else f"exit {proc.returncode}",
                    f"{seconds:.0f} s; {last if proc.returncode == 0 else err}"[:150],
                )
            )
    print("", file=out)
    print(f"gpu-check summary ({name})", file=out)
    width = max(len(r[0]) for r in table)
    for what, verdict, detail in table:
        print(f"  {what:<{width}}  {verdict:<13}  {detail}", file=out)
    out.flush()
    return 0 if all(v in ("ok", "target met", "target missed") for _, v, _ in table) else 1


class _Tee(io.TextIOBase):
    def __init__(self, *streams: Any):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()
