"""`bench speed`: the same model on the same images and device, trained three ways.

(a) naive: torchvision's CIFAR10 dataset with per-image PIL transforms (random crop with 4-px
    padding, horizontal flip, ToTensor, Normalize), a DataLoader and a plain fp32 loop;
(b) pipeline: bench.train.train_trial (data resident on the device, whole-batch augmentation and
    normalisation, bf16 + channels_last + cudnn.benchmark on CUDA); optionally torch.compile'd;
(c) packed: bench.train.train_packed with k trials (different seeds) in one process.

Every variant runs in its own fresh process (so its peak RSS is its own) for `epochs` epochs; the
first epoch is warm-up (cudnn autotuning, compilation, allocator growth) and is not timed; seconds
per epoch is the median of the others. Throughput counts training images only (evaluation is
excluded from (b) and (c) and absent from (a)).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchvision import datasets

QUICK = {"model": "cnn", "n_train": 5000, "epochs": 2, "packs": (1, 2)}  # the quick profiles' small CNN, their 5,000 images
MODELS = {"cnn": {"model": "cnn"}, "resnet20": {"model": "resnet", "depth": 20}}


@dataclass
class Variant:
    name: str  # naive | pipeline | compiled | packed
    k: int = 1  # trials trained at once


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


def _cuda_peak_mb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _epoch_seconds(cumulative: list[float]) -> tuple[float, float]:
    """(median seconds of the epochs after the first, first epoch's seconds) from cumulative seconds (epoch 0 = 0)."""
    per = [b - a for a, b in zip(cumulative, cumulative[1:])]
    return statistics.median(per[1:]) if len(per) > 1 else per[0], per[0]


class _Cifar10Files:
    """A cifar-10-batches-py folder holding `images`, so torchvision's own CIFAR10 class reads them."""

    def __init__(self, x, y):
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-speed-")
        folder = Path(self.tmp.name) / "cifar-10-batches-py"
        folder.mkdir()
        flat = x.reshape(len(x), -1).numpy()  # (N, 3072) in channel-plane order, as the canonical files
        labels = [int(v) for v in y]
        for i in range(1, 6):  # CIFAR10(train=True) reads data_batch_1..5; the images go into the first
            rows = slice(None) if i == 1 else slice(0, 0)
            with open(folder / f"data_batch_{i}", "wb") as fh:
                pickle.dump({"data": flat[rows], "labels": labels[rows] if i == 1 else []}, fh)
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": [str(c) for c in range(10)]}, fh)
        self.root = self.tmp.name


class _RewrittenCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10 over batch files just written from the same images (they have no
    published checksums). At module level so DataLoader workers can pickle it."""

    meta = {**datasets.CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return True


def _naive(cfg, data, device, workers: int) -> dict[str, Any]:
    import torch
    from torch import nn
    from torchvision import transforms

    from bench.data import make_splits
    from bench.engine.components import OPTIMIZERS
    from bench.engine.models import build_model

    splits = make_splits(data, cfg.n_train, cfg.n_val, cfg.n_test)
    mean = (splits.train_x.float() / 255).mean(dim=(0, 2, 3)).tolist()
    std = (splits.train_x.float() / 255).std(dim=(0, 2, 3)).tolist()
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    files = _Cifar10Files(splits.train_x, splits.train_y)

    dataset = _RewrittenCIFAR10(files.root, train=True, transform=tf, download=False)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, (3, 32, 32), torch.Generator().manual_seed(cfg.seed)).to(device)
    optimizer = OPTIMIZERS.get(cfg.optimizer)(model.parameters(), cfg)
    cumulative, total = [0.0], 0.0
    model.train()
    try:
        for _ in range(cfg.epochs):
            t0 = time.perf_counter()
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            total += time.perf_counter() - t0
            cumulative.append(total)
    finally:
        files.tmp.cleanup()
    return {"cumulative": cumulative, "images": len(dataset), "note": f"torchvision CIFAR10 + DataLoader(num_workers={workers})"}


def _measure(variant: Variant, overrides: dict[str, Any], data_dir: str | None, workers: int, threads: int) -> dict[str, Any]:
    """Run one variant (in a fresh process) and return its figures."""
    import torch

    from bench.config import make_config
    from bench.data import load_cifar10
    from bench.engine.loop import resolve_device, train_packed, train_trial

    torch.set_num_threads(threads)
    data = load_cifar10(data_dir)
    cfg = make_config(overrides)
    device = resolve_device(cfg.device)
    rss0 = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if variant.name == "naive":
        out = _naive(cfg, data, device, workers)
    elif variant.name in ("pipeline", "compiled"):
        record = train_trial(cfg, progress=False, data=data, compile=variant.name == "compiled")
        out = {"cumulative": record["history.seconds"], "images": record["n_train_used"], "note": ""}
    else:
        cfgs = [make_config({**overrides, "seed": s}) for s in range(variant.k)]
        records = train_packed(cfgs, progress=False, data=data)
        out = {"cumulative": records[0]["history.seconds"], "images": records[0]["n_train_used"] * variant.k, "note": ""}
    epoch, first = _epoch_seconds(out["cumulative"])
    return {
        "variant": variant.name,
        "k": variant.k,
        "seconds_per_epoch": epoch,
        "first_epoch": first,
        "images_per_s": out["images"] / epoch,
        "rss_mb": _rss_mb(),
        "rss_before_mb": rss0,
        "cuda_peak_mb": _cuda_peak_mb(device),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "note": out["note"],
    }


def _in_fresh_process(*args) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_measure, *args).result()


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
    out=sys.stdout,
) -> list[dict[str, Any]]:
    """Measure every variant, print the table and the summary lines; return the rows."""
    import torch

    from bench.data import load_cifar10
    from bench.engine.loop import resolve_device

    dev = resolve_device(device)
    if quick:
        model = QUICK["model"]
    packs = packs or (QUICK["packs"] if quick else (1, 4, 8))
    on_cuda = dev.type == "cuda"
    n_train = n_train if n_train is not None else (QUICK["n_train"] if quick or not on_cuda else 0)  # 0: all of it
    epochs = epochs or (QUICK["epochs"] if quick else 4 if on_cuda else 3)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    threads = torch.get_num_threads()
    load_cifar10(data_dir)  # decode once here, so every variant reads the cache
    overrides = base_overrides(model, n_train, epochs, batch_size, str(dev))
    variants = (
        [Variant("naive"), Variant("pipeline")]
        + ([Variant("compiled")] if compile else [])
        + [Variant("packed", k) for k in packs if k > 1]
    )
    print(
        f"bench speed: model {model}, device {dev}, {n_train or 'all'} training images, batch {batch_size}, "
        f"{epochs} epochs per variant (the first is warm-up), torch threads {threads}",
        file=out,
        flush=True,
    )
    rows = []
    for v in variants:
        label = v.name + (f" k={v.k}" if v.name == "packed" else "")
        print(f"  measuring {label} ...", file=out, flush=True)
        try:
            rows.append(_in_fresh_process(v, overrides, data_dir, workers, threads))
        except Exception as exc:  # e.g. torch.compile without a working compiler: a row that says so
            rows.append(
                {
                    "variant": v.name,
                    "k": v.k,
                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}",
                }
            )
    print_table(rows, out)
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """speedup_vs_naive (pipeline over naive images/s) and packed_speedup (best packed aggregate over
    the single-trial pipeline), each with how it was computed."""
    by = {(r["variant"], r["k"]): r for r in rows if "error" not in r}
    out: dict[str, tuple[float, str]] = {}
    pipe, naive = by.get(("pipeline", 1)), by.get(("naive", 1))
    if pipe and naive:
        out["speedup_vs_naive"] = (pipe["images_per_s"] / naive["images_per_s"], "pipeline / naive images/s")
    packed = [r for (name, _), r in by.items() if name == "packed"]
    if pipe and packed:
        best = max(packed, key=lambda r: r["images_per_s"])
        out["packed_speedup"] = (
            best["images_per_s"] / pipe["images_per_s"],
            f"packed k={best['k']} aggregate / one trial at a time images/s",
        )
    if "compiled" in {r["variant"] for r in by.values()} and pipe:
        c = by[("compiled", 1)]
        out["compile_speedup"] = (
            c["images_per_s"] / pipe["images_per_s"],
            f"compiled / eager pipeline images/s; compilation ~{max(c['first_epoch'] - c['seconds_per_epoch'], 0):.1f} s, not counted",
        )
    return out


def print_table(rows: list[dict[str, Any]], out=sys.stdout) -> None:
    head = f"{'variant':<12}{'trials':>7}{'images/s':>11}{'s/epoch':>9}{'1st epoch s':>13}{'peak RSS MB':>13}{'CUDA peak MB':>14}"
    print("", file=out)
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<12}{r['k']:>7}  failed: {r['error']}", file=out)
            continue
        cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
        print(
            f"{r['variant']:<12}{r['k']:>7}{r['images_per_s']:>11.0f}{r['seconds_per_epoch']:>9.2f}{r['first_epoch']:>13.2f}"
            f"{r['rss_mb']:>13.0f}{cuda:>14}",
            file=out,
        )
    notes = sorted({r["note"] for r in rows if r.get("note")})
    devices = sorted({r["device"] for r in rows if "device" in r})
    print(
        f"device: {', '.join(devices)}"
        + (f"; naive = {'; '.join(notes)}" if notes else "")
        + "; peak RSS: the training process (DataLoader workers not counted)",
        file=out,
    )
    for key, (value, how) in summary(rows).items():
        print(f"{key}: {value:.2f}   ({how})", file=out)
    out.flush()
