"""Localization as a task of the one training loop: CIFAR-10 images pasted at a random position and size on a
larger canvas (bench/data/canvas.py); one network, two heads: class logits (cross-entropy) and a box (cx, cy, w,
h) regressed with an L2 or smooth-L1 loss. Its records add box metrics to the classification ones (see
`Localize.finish`)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.config import ConfigError, TrialConfig
from bench.data import Cifar10, fit_normalizer, fixed_canvases, make_splits, place_on_canvas

from .activations import ACTIVATIONS
from .inits import apply_init
from .models import build_model
from .task import TASKS, Task, TaskData

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


class Localize(Task):
    """Records keep train_trial's keys (train/val/test_loss are the class head's cross-entropy, so they compare
    with classification-only runs) and add: train/val/test_iou (mean IoU of predicted vs true boxes),
    train/val/test_box_loss (cfg.box_loss on standardised targets), best_val_iou, test_iou_mean_box (IoU of the
    training set's mean box on every test canvas: what a position-blind predictor reaches), box_mean / box_std
    (the training boxes' statistics, canvas units) and samples.png (a base64 PNG strip of N_SAMPLES fixed test
    canvases), samples.true_box, samples.pred_box ([cx, cy, w, h] per canvas, canvas units), samples.label,
    samples.pred_label. History adds train/val/test_iou, train/val/test_box_loss and train_box_loss_running
    (epochs 1..E); its train_loss_running is the training objective (cross-entropy + box_weight x box loss), not the
    class head's cross-entropy alone. With box_weight = 0 the box head is never trained: its IoU is that of an
    untrained head."""

    name = "localize"
    packable = False  # two heads: trained alone
    finals = ("loss", "acc", "box_loss", "iou")

    def rules(self, cfg: TrialConfig) -> list[tuple[bool, str]]:
        return [
            (cfg.canvas >= 32 and cfg.box_weight >= 0, "canvas must be >= 32 (pixels) and box_weight >= 0"),
            (cfg.model in ("cnn", "resnet"), "task=localize needs model=cnn or resnet (a conv trunk for two heads)"),
            (
                cfg.normalization not in ("pca", "pca_whiten", "zca"),
                "task=localize needs a per-channel normalization (raw, unit, symmetric, standardize): canvases are large",
            ),
            (
                not cfg.augment,
                "task=localize: augment must be false (random placement is its augmentation; a crop or flip would move the box)",
            ),
        ]

    def prepare(self, cfg: TrialConfig, data: Cifar10, device: torch.device) -> TaskData:
        """Fixed canvases (seeds independent of the trial's) for a training subset (train metrics, the normaliser,
        the box statistics, the probe), all of validation and test; training canvases are drawn per batch."""
        splits = make_splits(data, cfg.n_train, cfg.n_val, cfg.n_test)
        tx, ty = splits.train_x.to(device), splits.train_y.to(device)
        n_source = len(data.train_x)
        subset = torch.randperm(len(tx), generator=torch.Generator().manual_seed(0))[: max(cfg.eval_train_size, cfg.probe_size)]
        ex, ebox = fixed_canvases(tx[subset.to(device)], splits.train_idx[subset], n_source, "train", cfg.canvas, cfg.background)
        ey = ty[subset.to(device)]
        vx, vbox = fixed_canvases(splits.val_x.to(device), splits.val_idx, n_source, "val", cfg.canvas, cfg.background)
        sx, sbox = fixed_canvases(splits.test_x.to(device), splits.test_idx, len(data.test_x), "test", cfg.canvas, cfg.background)
        norm = fit_normalizer(cfg.normalization, ex.cpu(), cfg.pca_k).to(device)  # fitted on training canvases only
        evals = {
            "train": (ex[: cfg.eval_train_size], (ey[: cfg.eval_train_size], ebox[: cfg.eval_train_size])),
            "val": (vx, (splits.val_y.to(device), vbox)),
            "test": (sx, (splits.test_y.to(device), sbox)),
        }
        td = TaskData(tx, ty, norm, evals, (ex, ey), build_localizer, data.source, data.digest)
        td.probe = (td.prep(ex[: cfg.probe_size]), ey[: cfg.probe_size])
        # target standardisation from the training boxes only
        td.extra.update(box_mean=ebox.mean(0), box_std=ebox.std(0).clamp_min(1e-6))
        return td

    def train_batch(self, cfg, td, idx, gen):
        canvases, boxes = place_on_canvas(td.train_x.index_select(0, idx), cfg.canvas, cfg.background, gen)  # fresh placements
        return td.prep(canvases), (td.train_y.index_select(0, idx), boxes)

    def _box(self, td: TaskData, boxes: torch.Tensor) -> torch.Tensor:
        return (boxes - td.extra["box_mean"]) / td.extra["box_std"]

    def loss(self, cfg, td, out, targets):
        (logits, pred), (labels, boxes) = out, targets
        bl = box_loss(pred.float(), self._box(td, boxes), cfg.box_loss)
        loss = F.cross_entropy(logits.float(), labels)
        return (loss + cfg.box_weight * bl if cfg.box_weight else loss), {"box_loss": bl}

    def eval_sums(self, cfg, td, out, targets):
        (logits, pred), (labels, boxes) = (out[0].float(), out[1].float()), targets
        return {
            "loss": F.cross_entropy(logits, labels, reduction="sum"),
            "correct": (logits.argmax(1) == labels).sum().float(),
            "box_loss": box_loss(pred, self._box(td, boxes), cfg.box_loss) * len(labels),
            "iou": box_iou(pred * td.extra["box_std"] + td.extra["box_mean"], boxes).sum(),
        }

    def probe_model(self, model: nn.Module) -> nn.Module:
        return nn.Sequential(model.trunk, model.classifier)  # the class path: its output is class logits

    def finish(self, cfg, td, trial) -> dict[str, Any]:
        ok = trial.record["status"] == "ok"
        sx, (sy, sbox) = td.evals["test"]
        mean, std = td.extra["box_mean"], td.extra["box_std"]
        pos = sample_positions(sy)
        model = trial.model
        model.eval()
        with torch.no_grad(), trial.amp():
            logits, pred = model(td.prep(sx[pos]))
        model.train()
        pred_box = pred.float() * std + mean
        val_iou = [v for v in trial.history.get("val_iou", []) if math.isfinite(v)]
        return {
            "best_val_iou": max(val_iou, default=None),
            "test_iou_mean_box": float(box_iou(mean.expand_as(sbox), sbox).mean()),
            "box_mean": [round(float(v), 5) for v in mean],
            "box_std": [round(float(v), 5) for v in std],
            "samples.png": _png_strip(sx[pos]),
            "samples.true_box": [[round(float(v), 4) for v in b] for b in sbox[pos]],
            "samples.pred_box": [[round(float(v), 4) for v in b] for b in pred_box]
            if ok and torch.isfinite(pred_box).all()
            else None,
            "samples.label": [int(v) for v in sy[pos]],
            "samples.pred_label": [int(v) for v in logits.float().argmax(1)] if ok else None,
        }


TASKS.register("localize", "class + box on images pasted onto a larger canvas (L2 or smooth-L1 box loss)")(Localize)
