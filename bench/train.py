"""One trial: train cfg.model on CIFAR-10 for cfg.epochs and return one flat record.

Nothing global: logging goes through the `logger` passed in (anything with
`log_epoch(epoch, metrics)`), so a trial runs the same with or without MLflow.
"""
from __future__ import annotations

import math
import platform
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from . import diagnostics as diag
from .components import OPTIMIZERS, SCHEDULES
from .config import ConfigError, TrialConfig, as_dict
from .data import Cifar10, augment, fit_normalizer, iterate_batches, load_cifar10, make_splits
from .models import build_model

EVAL_BATCH = {"cpu": 128, "cuda": 1024}  # images per evaluation pass: small batches stay in CPU cache


class EpochLogger(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but CUDA is not available; use device=cpu or device=auto")
    return device


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, prep, noise: float, generator: torch.Generator, amp) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) in eval mode over all of x."""
    model.eval()
    loss_sum, correct = 0.0, 0
    size = EVAL_BATCH.get(x.device.type, 256)
    for start in range(0, len(x), size):
        xb = prep(x[start:start + size])
        if noise:
            xb = xb + noise * torch.randn(xb.shape, generator=generator).to(xb.device)
        with amp():
            logits = model(xb).float()
        yb = y[start:start + size]
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train()
    return loss_sum / len(x), correct / len(x)


def train_trial(cfg: TrialConfig, logger: EpochLogger | None = None, progress: bool = True,
                data: Cifar10 | None = None) -> dict[str, Any]:
    """Train one trial and return its flat, JSON-serialisable record (see README for keys).

    A NaN/Inf loss ends the trial early with status "diverged": a diverged arm is a result.
    `data` may be passed in to reuse already-loaded data across trials.
    """
    wall0 = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)  # PyTorch's default init and dropout masks draw from the global RNG
    gen = torch.Generator().manual_seed(cfg.seed)  # our inits, shuffling, augmentation, noise
    data = data if data is not None else load_cifar10(cfg.data_dir or None)
    splits = make_splits(data, cfg.n_train, cfg.n_val, cfg.n_test)
    on_cuda = device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else nullcontext
    if on_cuda:
        torch.backends.cudnn.benchmark = True

    norm = fit_normalizer(cfg.normalization, splits.train_x, cfg.pca_k).to(device)
    tx, ty = splits.train_x.to(device), splits.train_y.to(device)
    vx, vy = splits.val_x.to(device), splits.val_y.to(device)
    sx, sy = splits.test_x.to(device), splits.test_y.to(device)
    fmt = torch.channels_last if on_cuda and len(norm.out_shape) == 3 else torch.contiguous_format
    prep = lambda xb: norm(xb).contiguous(memory_format=fmt)  # noqa: E731
    # Fixed random subsets (the same for every trial on these data; the split is sorted by
    # class, so a plain slice would hold one or two classes only).
    subset = torch.randperm(len(tx), generator=torch.Generator().manual_seed(0)).to(device)
    ex, ey = tx[subset[: cfg.eval_train_size]], ty[subset[: cfg.eval_train_size]]  # train accuracy, eval mode
    px, py = prep(tx[subset[: cfg.probe_size]]), ty[subset[: cfg.probe_size]]  # diagnostics probe batch

    model = build_model(cfg, norm.out_shape, gen).to(device, memory_format=fmt)
    optimizer = OPTIMIZERS.get(cfg.optimizer)(model.parameters(), cfg)
    steps_per_epoch = math.ceil(len(tx) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    lr_at = SCHEDULES.get(cfg.schedule)(total_steps)
    eval_gen = torch.Generator()

    history: dict[str, list] = {}
    record: dict[str, Any] = {"status": "ok", "diverged_epoch": None}

    def log(epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            history.setdefault(key, []).append(value)
        if logger is not None:
            logger.log_epoch(epoch, {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def measure(epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        eval_gen.manual_seed(cfg.seed + 1)  # the same test noise every epoch
        metrics = dict(extra)
        for split, (x, y) in {"train": (ex, ey), "val": (vx, vy), "test": (sx, sy)}.items():
            metrics[f"{split}_loss"], metrics[f"{split}_acc"] = evaluate(model, x, y, prep, cfg.test_noise, eval_gen, amp)
        probe = diag.probe(model, px, py, histograms=epoch in (0, cfg.epochs))
        hist = {k: probe.pop(k) for k in list(probe) if ".hist_" in k}
        record.update({f"{'init' if epoch == 0 else 'final'}.{k}": v for k, v in hist.items()})
        metrics.update(probe)
        metrics.update(diag.effective_lr(model, optimizer, cfg.lr * lr_at(epoch * steps_per_epoch)))
        return metrics

    log(0, measure(0, {"epoch": 0, "seconds": 0.0, "lr": cfg.lr * lr_at(0)}))
    step, train_seconds, epochs_run = 0, 0.0, 0
    bar = tqdm(total=total_steps, desc=f"{cfg.model} {cfg.activation} {cfg.optimizer} seed={cfg.seed}",
               disable=not progress, leave=False, unit="step", dynamic_ncols=True)
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        ratios: dict[str, float] = {}
        diverged = False
        for i, idx in enumerate(iterate_batches(len(tx), cfg.batch_size, gen)):
            idx = idx.to(device)
            xb = tx[idx]
            if cfg.augment:
                xb = augment(xb, gen)
            xb = prep(xb)
            if cfg.input_noise:
                xb = xb + cfg.input_noise * torch.randn(xb.shape, generator=gen).to(device)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_at(step)
            with amp():
                loss = nn.functional.cross_entropy(model(xb).float(), ty[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            before = diag.snapshot(model) if i == 0 else None
            optimizer.step()
            if before is not None:
                ratios = diag.update_ratios(model, before)
            loss_sum += loss.detach() * len(idx)
            step += 1
            if i % 20 == 0 and not torch.isfinite(loss_sum):  # syncs the device only every 20 steps
                diverged = True
                break
            bar.update(1)
        train_seconds += time.perf_counter() - t0
        epochs_run = epoch
        train_loss = float(loss_sum) / len(tx)
        if diverged or not math.isfinite(train_loss):
            record.update(status="diverged", diverged_epoch=epoch)
            break
        metrics = measure(epoch, {"epoch": epoch, "seconds": train_seconds, "lr": cfg.lr * lr_at(step),
                                  "train_loss_running": train_loss, **ratios})
        log(epoch, metrics)
        bar.set_postfix(val_acc=f"{metrics['val_acc']:.3f}")
        if not math.isfinite(metrics["val_loss"]):
            record.update(status="diverged", diverged_epoch=epoch)
            break
    bar.close()

    if record["status"] == "ok":
        record.update(diag.distinct_units(model))
        record["collapse_err"] = diag.linear_collapse_error(model, px)
        record.update(diag.accumulated_vs_step(model, optimizer, cfg.lr))
    last = {k: v[-1] for k, v in history.items()}
    finals = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    record.update({k: (last[k] if record["status"] == "ok" else None) for k in finals})  # None: JSON has no NaN
    record.update({
        "epochs_run": epochs_run,
        "best_val_acc": max(history["val_acc"]),
        "seconds": time.perf_counter() - wall0,
        "train_seconds": train_seconds,
        "images_per_s": len(tx) * epochs_run / max(train_seconds, 1e-9),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_train_used": len(tx), "n_val_used": len(vx), "n_test_used": len(sx),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if on_cuda else f" ({platform.processor() or platform.machine()})"),
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "data_source": data.source, "data_digest": data.digest,
        **{f"config.{k}": v for k, v in as_dict(cfg).items()},
        **{f"history.{k}": v for k, v in history.items()},
    })
    return record
