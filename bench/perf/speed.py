"""`bench speed`: the same model on the same images and device, trained every way the engine can, one row printed
as soon as each is measured.

naive       torchvision's CIFAR10 dataset with per-image PIL transforms (random crop with 4-px padding, horizontal
            flip, ToTensor, Normalize), a DataLoader and a plain fp32 loop with torch.optim;
eager       bench.engine.loop.train_trial with cuda_graphs=false (data resident on the device, whole-batch
            augmentation and normalisation, bf16 + channels_last + cudnn.benchmark on CUDA);
graph       the same trial with its step captured as a CUDA graph and replayed (CUDA only; the default there);
compiled    eager through torch.compile (--compile; its compilation time is reported, not counted);
vmap k      k trials fused into one model (train_packed mode "vmap");
streams k   k trials side by side, each its own graph on its own CUDA stream (mode "streams"; CUDA only);
workers N   N processes sharing the device, each training one trial (or `streams k` with N x k).

Each variant runs in fresh processes (so peak RSS is its own) for `epochs` epochs; the first epoch is warm-up
(cuDNN autotuning, graph capture, compilation) and is not timed; seconds per epoch is the median of the others.
Throughput counts training images of all trials together (evaluation is excluded). The table goes to --json and
to the cache (bench.perf.throughput.table_path), where `bench study --plan` and the default --pack/--workers read it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
from dataclasses import dataclass
from queue import Empty
from typing import Any

QUICK = {"model": "cnn", "n_train": 5000, "epochs": 2, "packs": (1, 2)}  # the quick profiles' small CNN, their 5,000 images
MODELS = {"cnn": {"model": "cnn"}, "resnet20": {"model": "resnet", "depth": 20}, "mlp": {"model": "mlp"}}


@dataclass(frozen=True)
class Variant:
    name: str  # naive | eager | graph | compiled | vmap | streams | workers
    k: int = 1  # trials per process
    n: int = 1  # processes at once

    @property
    def label(self) -> str:
        if self.name == "workers":
            return f"workers {self.n}" + (f" x streams {self.k}" if self.k > 1 else "")
        return f"{self.name} {self.k}" if self.name in ("vmap", "streams") else self.name


def base_overrides(model: str, n_train: int, epochs: int, batch_size: int, device: str) -> dict[str, Any]:
    """The trial config every variant trains: augmentation on, tiny evaluation sets (evaluation is not timed)."""
    return {
        **MODELS[model],
        "n_train": n_train,
        "n_val": 10,
        "n_test": 10,
        "eval_train_size": 10,
        "probe_size": 8,
        "epochs": epochs,
        "batch_size": batch_size,
        "augment": True,
        "device": device,
        "schedule": "constant",
        "lr": 0.05,
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _epoch_seconds(cumulative: list[float]) -> tuple[float, float]:
    """(median seconds of the epochs after the first, first epoch's seconds) from cumulative seconds (epoch 0 = 0)."""
    per = [b - a for a, b in zip(cumulative, cumulative[1:])]
    if not per:
        raise RuntimeError("the trial diverged in its first epoch: nothing to time (lower the learning rate)")
    return statistics.median(per[1:]) if len(per) > 1 else per[0], per[0]


def _measure(
    variant: Variant, overrides: dict[str, Any], data_dir: str | None, workers: int, threads: int, barrier=None
) -> dict[str, Any]:
    """Run one variant in this (fresh) process and return its figures; `barrier`: start training with the others."""
    import torch

    from bench.data import load_cifar10
    from bench.engine.device import resolve_device
    from bench.engine.loop import train_packed
    from bench.engine.rules import make_config

    torch.set_num_threads(threads)
    data = load_cifar10(data_dir)
    graphs = variant.name != "eager"  # on the CPU the step is eager whatever this says
    cfgs = [make_config({**overrides, "seed": s, "cuda_graphs": graphs}) for s in range(variant.k)]
    device = resolve_device(cfgs[0].device)
    rss0 = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if barrier is not None:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
    if variant.name == "naive":
        from .naive import train_naive

        out = train_naive(cfgs[0], data, device, workers)
    elif variant.name == "compiled":
        out = _compiled(cfgs[0], data)
    else:
        mode = "vmap" if variant.name == "vmap" else "streams"
        sampler = SMSampler(device)
        records = train_packed(cfgs, [sampler] + [None] * (len(cfgs) - 1), progress=False, data=data, mode=mode)
        out = {
            "cumulative": records[0]["history.seconds"],
            "images": records[0]["n_train_used"] * variant.k,
            "note": records[0]["graph"],
            "sm_busy": sampler.busy(),
        }
    epoch, first = _epoch_seconds(out["cumulative"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "variant": variant.name,
        "label": variant.label,
        "k": variant.k,
        "n": variant.n,
        "seconds_per_epoch": epoch,
        "first_epoch": first,
        "images_per_s": out["images"] / epoch,
        "rss_mb": _rss_mb(),
        "rss_before_mb": rss0,
        "cuda_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": name,
        "note": out["note"],
        "sm_busy": out.get("sm_busy"),
    }


class SMSampler:
    """The share of time the GPU ran a kernel (nvidia-smi's utilization.gpu, sampled every 100 ms) during the
    timed epochs: an epoch logger that starts sampling when epoch 1 ends and reads the mean when the run ends."""

    def __init__(self, device):
        self.samples: list[float] = []
        self.proc = None
        self.on = device.type == "cuda"
        # nvidia-smi numbers the GPUs physically; CUDA_VISIBLE_DEVICES maps torch's numbers onto them
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        index = device.index or 0
        self.index = visible[index].strip() if index < len(visible) else str(index)

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        if epoch == 1 and self.on and self.proc is None:
            import subprocess
            import threading

            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100", "-i", self.index]
            try:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:  # no nvidia-smi: no figure
                self.on = False
                return
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def busy(self) -> float | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait()
        return sum(self.samples) / len(self.samples) if self.samples else None


def _compiled(cfg, data) -> dict[str, Any]:
    """Eager trial with the model through torch.compile (the first epoch's seconds include the compilation)."""
    import torch

    from bench.engine.device import resolve_device
    from bench.engine.fit import fit
    from bench.engine.loop import task_of
    from bench.engine.trial import Trial

    device = resolve_device(cfg.device)
    task = task_of(cfg)
    trial = Trial(cfg, task, task.prepare(cfg, data, device), device)
    trial.model = torch.compile(trial.model)
    fit([trial], "single", False, progress=False, label="compiled")
    return {"cumulative": trial.history["seconds"], "images": len(trial.td.train_x), "note": "torch.compile"}


BARRIER_TIMEOUT_S = 900  # processes of one variant wait this long for each other before training


def _worker(args, queue) -> None:  # a process of a `workers N` variant
    try:
        queue.put(_measure(*args))
    except Exception as exc:
        args[-1].abort()  # the others must not wait at the barrier for this one
        queue.put({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"})


def _in_fresh_processes(variant: Variant, *args) -> dict[str, Any]:
    """`variant.n` fresh processes at once (spawned: no state shared with this one), started together."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(variant.n)
    procs = [ctx.Process(target=_worker, args=((variant, *args, barrier), queue)) for _ in range(variant.n)]
    for p in procs:
        p.start()
    rows: list[dict[str, Any]] = []
    while len(rows) < len(procs):  # a process that dies without a word (killed, a CUDA abort) ends the wait
        try:
            rows.append(queue.get(timeout=5))
        except Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a measuring process died (exit status {dead[0].exitcode})") from None
    for p in procs:
        p.join()
    errors = [r["error"] for r in rows if "error" in r]
    if errors:
        raise RuntimeError(errors[0])
    if variant.n == 1:
        return rows[0]
    row = dict(rows[0])
    slowest = max(r["seconds_per_epoch"] for r in rows)
    row.update(  # all the processes' timed images over the slowest timed epoch (they overlap, not exactly)
        images_per_s=sum(r["images_per_s"] * r["seconds_per_epoch"] for r in rows) / slowest,
        seconds_per_epoch=slowest,
        rss_mb=sum(r["rss_mb"] for r in rows),
        cuda_peak_mb=sum(r["cuda_peak_mb"] or 0 for r in rows) or None,
    )
    return row


def variants_for(device_type: str, packs: tuple[int, ...], procs: tuple[int, ...], compile: bool) -> list[Variant]:
    """What to measure: on CUDA graphs, packs both ways and processes; on the CPU eager and fused packs only
    (side-by-side streams and processes only share two cores there)."""
    cuda = device_type == "cuda"
    out = [Variant("naive"), Variant("eager")] + ([Variant("graph")] if cuda else []) + ([Variant("compiled")] if compile else [])
    out += [Variant("vmap", k) for k in packs if k > 1]
    if cuda:
        out += [Variant("streams", k) for k in packs if k > 1]
        out += [Variant("workers", 1, n) for n in procs if n > 1]
        out += [Variant("workers", k, n) for n in procs if n > 1 for k in packs if k > 1]
    return out


def run_speed(
    model: str = "cnn",
    device: str = "auto",
    quick: bool = False,
    packs: tuple[int, ...] | None = None,
    n_train: int | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    workers: int | None = None,
    compile: bool = False,
    data_dir: str | None = None,
    procs: tuple[int, ...] | None = None,
    json_path: str | None = None,
    out=sys.stdout,
) -> list[dict[str, Any]]:
    """Measure every variant, printing each row as soon as it is measured, then the summary lines; save the
    table (--json and the cache); return the rows."""
    import torch

    from bench.data import load_cifar10
    from bench.engine.device import resolve_device
    from bench.engine.rules import make_config

    from .throughput import macs_per_image, save_measurement

    dev = resolve_device(device)
    if quick:
        model = QUICK["model"]
    on_cuda = dev.type == "cuda"
    packs = packs or (QUICK["packs"] if quick else (1, 4, 8) if on_cuda else (1, 4))
    procs = procs or ((1, 2) if on_cuda else (1,))
    n_train = n_train if n_train is not None else (QUICK["n_train"] if quick or not on_cuda else 0)  # 0: all of it
    epochs = epochs or (QUICK["epochs"] if quick else 2 if on_cuda else 3)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    threads = torch.get_num_threads()
    load_cifar10(data_dir)  # decode once here, so every variant reads the cache
    overrides = base_overrides(model, n_train, epochs, batch_size, str(dev))
    macs = macs_per_image(make_config(overrides))
    print(
        f"bench speed: model {model} ({macs / 1e6:.1f} M multiply-adds per image), device {dev}, {n_train or 'all'} "
        f"training images, batch {batch_size}, {epochs} epochs per variant (the first is warm-up), torch threads {threads}",
        file=out,
        flush=True,
    )
    print_head(out)
    rows: list[dict[str, Any]] = []
    for v in variants_for(dev.type, packs, procs, compile):
        try:
            row = _in_fresh_processes(v, overrides, data_dir, workers, max(1, threads // v.n))
        except Exception as exc:  # e.g. torch.compile without a working compiler: a row that says so
            row = {"variant": v.name, "label": v.label, "k": v.k, "n": v.n, "error": f"{type(exc).__name__}: {str(exc)[:160]}"}
        row.update(model=model, macs=macs)
        rows.append(row)
        print_row(row, rows, out)
    print_summary(rows, out)
    save_measurement(dev.type, model, macs, rows, json_path)
    return rows


def single(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The one-trial path bench study uses on this device: graph on CUDA, eager elsewhere."""
    by = {r["variant"]: r for r in rows if "error" not in r}
    return by.get("graph") or by.get("eager")


def summary(rows: list[dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """The ratios printed last, each with how it was computed."""
    ok = [r for r in rows if "error" not in r]
    by = {r["label"]: r for r in ok}
    one, out = single(ok), {}
    if one and "naive" in by:
        out["speedup_vs_naive"] = (one["images_per_s"] / by["naive"]["images_per_s"], f"{one['label']} / naive images/s")
    if "graph" in by and "eager" in by:
        out["graph_speedup"] = (by["graph"]["images_per_s"] / by["eager"]["images_per_s"], "graph / eager images/s")
    if one:
        packed = [r for r in ok if r["variant"] in ("vmap", "streams")]
        if packed:
            best = max(packed, key=lambda r: r["images_per_s"])
            out["packed_speedup"] = (
                best["images_per_s"] / one["images_per_s"],
                f"{best['label']} aggregate / one trial images/s",
            )
        concurrent = [r for r in ok if r["k"] * r["n"] > 1]
        if concurrent:
            best = max(concurrent, key=lambda r: r["images_per_s"])
            out["best_concurrency"] = (
                best["images_per_s"] / one["images_per_s"],
                f"{best['label']} aggregate / one trial images/s",
            )
    if "compiled" in by and "eager" in by:
        c = by["compiled"]
        out["compile_speedup"] = (
            c["images_per_s"] / by["eager"]["images_per_s"],
            f"compiled / eager images/s; compilation ~{max(c['first_epoch'] - c['seconds_per_epoch'], 0):.1f} s, not counted",
        )
    return out


HEAD = (
    f"{'variant':<22}{'trials':>7}{'images/s':>11}{'x one':>7}{'s/epoch':>9}{'1st epoch s':>13}{'SMs busy %':>11}"
    f"{'peak RSS MB':>13}{'CUDA peak MB':>14}"
)


def print_head(out=sys.stdout) -> None:
    print("", file=out)
    print(HEAD, file=out)
    print("-" * len(HEAD), file=out, flush=True)


def print_row(r: dict[str, Any], rows: list[dict[str, Any]], out=sys.stdout) -> None:
    if "error" in r:
        print(f"{r['label']:<22}{r['k'] * r['n']:>7}  failed: {r['error']}", file=out, flush=True)
        return
    one = single(rows)
    times = f"{r['images_per_s'] / one['images_per_s']:.2f}" if one else "-"
    cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
    sm = f"{r['sm_busy']:.0f}" if r.get("sm_busy") is not None else "-"
    print(
        f"{r['label']:<22}{r['k'] * r['n']:>7}{r['images_per_s']:>11.0f}{times:>7}{r['seconds_per_epoch']:>9.2f}"
        f"{r['first_epoch']:>13.2f}{sm:>11}{r['rss_mb']:>13.0f}{cuda:>14}",
        file=out,
        flush=True,
    )


def print_summary(rows: list[dict[str, Any]], out=sys.stdout) -> None:
    devices = sorted({r["device"] for r in rows if "device" in r})
    notes = sorted({f"{r['label']}: {r['note']}" for r in rows if r.get("note") and r["variant"] in ("naive", "graph")})
    print(
        f"device: {', '.join(devices)}"
        + (f"; {'; '.join(notes)}" if notes else "")
        + "; x one: aggregate over the one-trial path; peak RSS: the training processes (DataLoader workers not counted)",
        file=out,
    )
    for key, (value, how) in summary(rows).items():
        print(f"{key}: {value:.2f}   ({how})", file=out)
    out.flush()


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
