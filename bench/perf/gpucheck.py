"""`bench gpu-check` (`make gpu-check`): one command for a machine with a GPU, printing as it goes and ending with
a table and gpu-check.json: `bench speed` for ResNet-20 and the small CNN on all of CIFAR-10, the engine's own
checks (graph vs eager for every optimizer, no host sync in steady-state steps, trials side by side), and a smoke
run of every core study, all six at once, each in its own temporary stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CORE_STUDIES = ("init", "activation", "optimizer", "dropout", "batchnorm", "resnet-depth")
RESNET_EPOCH_TARGET_S = 1.0  # issue target: one ResNet-20 epoch of one trial on all of CIFAR-10, on an H200
CONCURRENCY_TARGET = {"resnet20": 4.0, "cnn": 8.0}  # aggregate throughput of concurrent trials over one trial
STUDY_TIMEOUT_S = 300  # a smoke study takes well under a minute on a GPU; five mean something is stuck
SPEED_PLAN = {"resnet20": {"packs": (1, 4), "procs": (1, 2)}, "cnn": {"packs": (1, 8), "procs": (1, 4)}}


def code_version() -> str:
    """A digest of the code a GPU measurement is about (bench/ and the study files): a slot runs gpu-check again
    only when it changed (scripts/gpu-slot). Computed from the files, so a copy without git has it too."""
    import hashlib

    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for path in sorted([*(root / "bench").rglob("*.py"), *(root / "studies").glob("*.toml")]):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def run_gpu_check(
    device: str = "cuda",
    n_train: int | None = None,
    epochs: int = 2,
    studies: tuple[str, ...] = CORE_STUDIES,
    data_dir: str | None = None,
    json_path: str = "gpu-check.json",
    out=sys.stdout,
) -> int:
    import torch

    from bench.data import load_cifar10
    from bench.engine.device import resolve_device

    from .speed import run_speed, single, summary

    t_start = time.perf_counter()
    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    say = lambda text: print(text, file=out, flush=True)  # noqa: E731
    say(f"gpu-check: device {dev} ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}")
    report: dict[str, Any] = {
        "device": name,
        "code_version": code_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "speed": {},
        "checks": [],
        "studies": {},
    }
    table: list[tuple[str, str, str]] = []
    for model, plan in SPEED_PLAN.items():
        t0 = time.perf_counter()
        say(f"\n== speed {model}")
        rows = run_speed(
            model,
            str(dev),
            packs=plan["packs"] if dev.type == "cuda" else (1,),  # packing is for a GPU
            procs=plan["procs"] if dev.type == "cuda" else (1,),
            n_train=n_train,
            epochs=epochs,
            data_dir=data_dir,
            out=out,
        )
        report["speed"][model] = rows
        ratios, one = summary(rows), single(rows)
        if one is None:
            table.append((f"speed {model}", "failed", next((r["error"] for r in rows if "error" in r), "")))
            continue
        best = ratios.get("best_concurrency", (1.0, ""))[0]
        detail = f"one trial {one['seconds_per_epoch']:.2f} s/epoch, {one['images_per_s']:.0f} img/s"
        detail += f" (SMs busy {one['sm_busy']:.0f}%)" if one.get("sm_busy") is not None else ""
        detail += "".join(f", {k} {v:.2f}" for k, (v, _) in ratios.items())
        verdict = "ok"
        if dev.type == "cuda" and not n_train:
            met = best >= CONCURRENCY_TARGET[model] and (model != "resnet20" or one["seconds_per_epoch"] <= RESNET_EPOCH_TARGET_S)
            verdict = "target met" if met else "target missed"
        table.append((f"speed {model}", verdict, detail + f" ({time.perf_counter() - t0:.0f} s)"))
    if dev.type == "cuda":
        from .cudacheck import run_checks

        say("\n== engine checks")
        t0 = time.perf_counter()
        checks = run_checks(load_cifar10(data_dir), out=say)
        report["checks"] = checks
        failed = [c for c in checks if not c["ok"]]
        table.append(
            (
                "engine checks",
                "ok" if not failed else f"{len(failed)} failed",
                f"{len(checks)} checks: graph vs eager, sync-free steps, streams vs alone ({time.perf_counter() - t0:.0f} s)",
            )
        )
    if studies:
        say(f"\n== smoke runs of {', '.join(studies)} (at once, each in its own stores)")
        for study, (verdict, detail) in smoke_studies(studies, data_dir).items():
            report["studies"][study] = {"verdict": verdict, "detail": detail}
            say(f"  {study:<14} {verdict:<10} {detail}")
            table.append((f"smoke {study}", verdict, detail[:150]))
    report["table"] = table
    report["seconds"] = time.perf_counter() - t_start
    Path(json_path).write_text(json.dumps(report, indent=1, default=str))
    say("")
    say(f"gpu-check summary ({name}; {report['seconds']:.0f} s; written to {json_path})")
    width = max(len(r[0]) for r in table)
    for what, verdict, detail in table:
        say(f"  {what:<{width}}  {verdict:<13}  {detail}")
    return 0 if all(v in ("ok", "target met", "target missed") for _, v, _ in table) else 1


def smoke_studies(studies: tuple[str, ...], data_dir: str | None) -> dict[str, tuple[str, str]]:
    """Every study at the smoke profile on this device, all at once, each in a temporary folder with its own stores."""
    data = str(Path(data_dir or os.environ.get("BENCH_DATA_DIR") or "data").resolve())  # the studies run elsewhere
    out: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-check-") as tmp:
        procs = {}
        for study in studies:
            folder = Path(tmp) / study
            folder.mkdir()
            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
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
                f"sqlite:///{folder}/optuna.db",
                "--data-dir",
                data,
                "--threads",
                "1",
            ]
            procs[study] = (
                subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                time.perf_counter(),
            )
        for study, (proc, t0) in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=max(1, STUDY_TIMEOUT_S - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                proc.kill()
                out[study] = ("timed out", f"over {STUDY_TIMEOUT_S} s")
                continue
            last = (stdout.strip().splitlines() or [""])[-1]
            err = (stderr.strip().splitlines() or [""])[-1]
            seconds = time.perf_counter() - t0
            out[study] = (
                ("ok", f"{seconds:.0f} s; {last}")
                if proc.returncode == 0
                else (f"exit {proc.returncode}", f"{seconds:.0f} s; {err}")
            )
    return out
