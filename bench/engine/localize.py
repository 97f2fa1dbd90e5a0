"""One localization trial: CIFAR-10 images pasted at random position and size on a larger canvas
(bench/data.py, "canvas placement"); one network, two heads: class logits (cross-entropy) and
a box (cx, cy, w, h) regressed with an L2 or smooth-L1 loss. Returns a record shaped like
bench.train.train_trial's, plus box metrics (see `train_localization`).
"""

from __future__ import annotations

import base64
import io
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from bench.config import ConfigError, TrialConfig
from bench.data import Cifar10, fit_normalizer, fixed_canvases, iterate_batches, load_cifar10, make_splits, place_on_canvas

from . import diagnostics as diag
from .components import ACTIVATIONS, OPTIMIZERS, SCHEDULES, apply_init
from .loop import EVAL_BATCH, EpochLogger, autocast_for, provenance, resolve_device
from .models import build_model

BOX_GRID = 4  # the box head pools the feature map to 4x4 cells: global pooling alone would discard position
BOX_HIDDEN = 128  # hidden units of the box head's MLP
N_SAMPLES = 8  # fixed test canvases whose true and predicted boxes the record keeps (the report draws them)


class Localizer(nn.Module):
    """A cnn/resnet backbone split after its last conv stage: `trunk` (conv stages -> feature map),
    `classifier` (the backbone's own head: global pool, flatten, dropout, linear -> 10 logits) and
    `box` (4x4 pool, flatten, linear-act-linear -> 4 numbers: the standardised box)."""

    def __init__(self, backbone: nn.Sequential, cfg: TrialConfig):
        super().__init__()
        channels = backbone[-1].in_features
        self.trunk, self.classifier = backbone[:-4], backbone[-4:]
        self.box = nn.Sequential(
            nn.AdaptiveAvgPool2d(BOX_GRID),
            nn.Flatten(),
            nn.Linear(channels * BOX_GRID**2, BOX_HIDDEN),
            ACTIVATIONS.get(cfg.activation)(),
            nn.Linear(BOX_HIDDEN, 4),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.trunk(x)
        return self.classifier(f), self.box(f)


def build_localizer(cfg: TrialConfig, in_shape: tuple[int, ...], generator: torch.Generator) -> Localizer:
    if cfg.model not in ("cnn", "resnet"):
        raise ConfigError(f"task=localize needs model=cnn or resnet (a conv trunk to split), got {cfg.model}")
    model = Localizer(build_model(cfg, in_shape, generator), cfg)
    apply_init(model.box, cfg, generator)
    return model


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise IoU of boxes a, b (..., 4) given as (cx, cy, w, h); negative sizes count as 0."""
    aw, ah = a[..., 2].clamp_min(0), a[..., 3].clamp_min(0)
    bw, bh = b[..., 2].clamp_min(0), b[..., 3].clamp_min(0)
    ix = ((a[..., 0] + aw / 2).minimum(b[..., 0] + bw / 2) - (a[..., 0] - aw / 2).maximum(b[..., 0] - bw / 2)).clamp_min(0)
    iy = ((a[..., 1] + ah / 2).minimum(b[..., 1] + bh / 2) - (a[..., 1] - ah / 2).maximum(b[..., 1] - bh / 2)).clamp_min(0)
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def box_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean box loss over coordinates and images, on standardised targets. l2: 0.5 d^2; smooth_l1:
    0.5 d^2 for |d| < 1, |d| - 0.5 beyond. The two agree for errors under one standard deviation and
    differ only in the tails (smooth-L1's gradient is capped at 1), so an arm changes one thing."""
    if kind == "l2":
        return 0.5 * F.mse_loss(pred, target)
    return F.smooth_l1_loss(pred, target, beta=1.0)


def _png_strip(canvases: torch.Tensor) -> str:
    """uint8 (N, 3, S, S) canvases side by side as one base64 PNG (N*S wide, S high)."""
    from PIL import Image

    strip = canvases.permute(2, 0, 3, 1).reshape(canvases.shape[2], -1, 3).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(strip)).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def sample_positions(y: torch.Tensor, n: int = N_SAMPLES) -> torch.Tensor:
    """Positions of the first test image of classes 0..n-1 (one of each; fixed for a given test split)."""
    first = [int(torch.nonzero(y == c)[0]) for c in range(n) if bool((y == c).any())]
    return torch.tensor(first, dtype=torch.long, device=y.device)


def train_localization(
    cfg: TrialConfig, logger: EpochLogger | None = None, progress: bool = True, data: Cifar10 | None = None
) -> dict[str, Any]:
    """Train one localization trial; return its flat record.

    Keys of train_trial's record (train/val/test_loss are the cross-entropy of the class head, so
    they compare with classification-only runs), plus: train/val/test_iou (mean IoU of predicted vs
    true boxes), train/val/test_box_loss (the cfg.box_loss on standardised targets), best_val_iou,
    test_iou_mean_box (IoU of the training set's mean box on every test canvas: the baseline a
    position-blind predictor reaches), box_mean / box_std (the training-set target statistics, canvas
    units) and samples.png (a base64 PNG strip of N_SAMPLES fixed test canvases), samples.true_box,
    samples.pred_box ([cx, cy, w, h] per canvas, canvas units), samples.label, samples.pred_label.
    History adds train/val/test_iou, train/val/test_box_loss and train_box_loss_running (epochs 1..E).
    With box_weight = 0 the box head is never trained: its IoU is that of an untrained head.
    """
    wall0 = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)  # init, shuffling, training placements and backgrounds
    data = data if data is not None else load_cifar10(cfg.data_dir or None)
    splits = make_splits(data, cfg.n_train, cfg.n_val, cfg.n_test)
    on_cuda = device.type == "cuda"
    amp = autocast_for(device)
    if on_cuda:
        torch.backends.cudnn.benchmark = True

    tx, ty = splits.train_x.to(device), splits.train_y.to(device)
    n_train_src = len(data.train_x)
    # Fixed canvases (seeds independent of the trial's): a training subset for train metrics, the
    # normaliser and the box statistics; all of validation and test.
    subset = torch.randperm(len(tx), generator=torch.Generator().manual_seed(0))[: max(cfg.eval_train_size, cfg.probe_size)]
    ex, ebox = fixed_canvases(tx[subset.to(device)], splits.train_idx[subset], n_train_src, "train", cfg.canvas, cfg.background)
    ey = ty[subset.to(device)]
    vx, vbox = fixed_canvases(splits.val_x.to(device), splits.val_idx, n_train_src, "val", cfg.canvas, cfg.background)
    sx, sbox = fixed_canvases(splits.test_x.to(device), splits.test_idx, len(data.test_x), "test", cfg.canvas, cfg.background)
    vy, sy = splits.val_y.to(device), splits.test_y.to(device)
    norm = fit_normalizer(cfg.normalization, ex.cpu(), cfg.pca_k).to(device)  # fitted on training canvases only
    box_mean, box_std = ebox.mean(0), ebox.std(0).clamp_min(1e-6)  # target standardisation, training boxes only
    fmt = torch.channels_last if on_cuda else torch.contiguous_format
    prep = lambda xb: norm(xb).contiguous(memory_format=fmt)  # noqa: E731
    px, py = prep(ex[: cfg.probe_size]), ey[: cfg.probe_size]
    ex, ebox, ey = ex[: cfg.eval_train_size], ebox[: cfg.eval_train_size], ey[: cfg.eval_train_size]

    model = build_localizer(cfg, norm.out_shape, gen).to(device, memory_format=fmt)
    class_path = nn.Sequential(model.trunk, model.classifier)  # what the per-layer probe measures (cross-entropy)
    optimizer = OPTIMIZERS.get(cfg.optimizer)([p for p in model.parameters() if p.requires_grad], cfg)
    steps_per_epoch = math.ceil(len(tx) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    lr_at = SCHEDULES.get(cfg.schedule)(total_steps)
    eval_gen = torch.Generator()

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor) -> dict[str, float]:
        model.eval()
        ce = correct = bl = iou = 0.0
        size = EVAL_BATCH.get(x.device.type, 256)
        for start in range(0, len(x), size):
            xb = prep(x[start : start + size])
            if cfg.test_noise:
                xb = xb + cfg.test_noise * torch.randn(xb.shape, generator=eval_gen).to(xb.device)
            with amp():
                logits, pred = model(xb)
            logits, pred = logits.float(), pred.float()
            yb, bb = y[start : start + size], boxes[start : start + size]
            ce += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
            bl += float(box_loss(pred, (bb - box_mean) / box_std, cfg.box_loss)) * len(yb)
            iou += float(box_iou(pred * box_std + box_mean, bb).sum())
        model.train()
        n = len(x)
        return {"loss": ce / n, "acc": correct / n, "box_loss": bl / n, "iou": iou / n}

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
        for split, args in {"train": (ex, ey, ebox), "val": (vx, vy, vbox), "test": (sx, sy, sbox)}.items():
            metrics.update({f"{split}_{k}": v for k, v in evaluate(*args).items()})
        probe = diag.probe(class_path, px, py, histograms=epoch in (0, cfg.epochs))
        hist = {k: probe.pop(k) for k in list(probe) if ".hist_" in k}
        record.update({f"{'init' if epoch == 0 else 'final'}.{k}": v for k, v in hist.items()})
        metrics.update(probe)
        metrics.update(diag.effective_lr(model, optimizer, cfg.lr * lr_at(epoch * steps_per_epoch)))
        return metrics

    log(0, measure(0, {"epoch": 0, "seconds": 0.0, "lr": cfg.lr * lr_at(0)}))
    step, train_seconds, epochs_run = 0, 0.0, 0
    bar = tqdm(
        total=total_steps,
        desc=f"localize {cfg.model} {cfg.box_loss} w={cfg.box_weight:g} seed={cfg.seed}",
        disable=not progress,
        leave=False,
        unit="step",
        dynamic_ncols=True,
    )
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        box_sum = torch.zeros((), device=device)
        ratios: dict[str, float] = {}
        diverged = False
        for i, idx in enumerate(iterate_batches(len(tx), cfg.batch_size, gen)):
            idx = idx.to(device)
            canvases, boxes = place_on_canvas(tx[idx], cfg.canvas, cfg.background, gen)  # fresh placements each epoch
            xb = prep(canvases)
            if cfg.input_noise:
                xb = xb + cfg.input_noise * torch.randn(xb.shape, generator=gen).to(device)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_at(step)
            with amp():
                logits, pred = model(xb)
            bl = box_loss(pred.float(), (boxes - box_mean) / box_std, cfg.box_loss)
            loss = F.cross_entropy(logits.float(), ty[idx])
            if cfg.box_weight:
                loss = loss + cfg.box_weight * bl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            before = diag.snapshot(model) if i == 0 else None
            optimizer.step()
            if before is not None:
                ratios = diag.update_ratios(model, before)
            loss_sum += loss.detach() * len(idx)
            box_sum += bl.detach() * len(idx)
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
        metrics = measure(
            epoch,
            {
                "epoch": epoch,
                "seconds": train_seconds,
                "lr": cfg.lr * lr_at(step),
                "train_loss_running": train_loss,
                "train_box_loss_running": float(box_sum) / len(tx),
                **ratios,
            },
        )
        if not all(math.isfinite(metrics[k]) for k in ("train_loss", "val_loss", "test_loss", "val_box_loss", "test_box_loss")):
            record.update(status="diverged", diverged_epoch=epoch)  # NaN weights: a finite step loss, then NaN outputs
            break
        log(epoch, metrics)
        bar.set_postfix(val_acc=f"{metrics['val_acc']:.3f}", val_iou=f"{metrics['val_iou']:.3f}")
    bar.close()

    ok = record["status"] == "ok"
    last = {k: v[-1] for k, v in history.items()}
    finals = [f"{s}_{m}" for s in ("train", "val", "test") for m in ("loss", "acc", "box_loss", "iou")]
    record.update({k: (last[k] if ok else None) for k in finals})  # None: JSON has no NaN
    pos = sample_positions(sy)
    model.eval()
    with torch.no_grad(), amp():
        logits, pred = model(prep(sx[pos]))
    model.train()
    pred_box = pred.float() * box_std + box_mean
    record.update(
        {
            "epochs_run": epochs_run,
            "best_val_acc": max(history["val_acc"]),
            "best_val_iou": max((v for v in history["val_iou"] if math.isfinite(v)), default=None),
            "test_iou_mean_box": float(box_iou(box_mean.expand_as(sbox), sbox).mean()),
            "box_mean": [round(float(v), 5) for v in box_mean],
            "box_std": [round(float(v), 5) for v in box_std],
            "samples.png": _png_strip(sx[pos]),
            "samples.true_box": [[round(float(v), 4) for v in b] for b in sbox[pos]],
            "samples.pred_box": (
                [[round(float(v), 4) for v in b] for b in pred_box] if ok and torch.isfinite(pred_box).all() else None
            ),
            "samples.label": [int(v) for v in sy[pos]],
            "samples.pred_label": [int(v) for v in logits.float().argmax(1)] if ok else None,
            "seconds": time.perf_counter() - wall0,
            "train_seconds": train_seconds,
            "images_per_s": len(tx) * epochs_run / max(train_seconds, 1e-9),
            "n_params": sum(p.numel() for p in model.parameters()),
            "n_train_used": len(tx),
            "n_val_used": len(vx),
            "n_test_used": len(sx),
            **provenance(cfg, device, data, history),
        }
    )
    return record
