"""localization: one CNN with a class head (cross-entropy) and a box head ((cx, cy, w, h) regressed with an L2 or
smooth-L1 loss) on CIFAR-10 images pasted at random position and size on a 64x64 canvas; class accuracy and mean
box IoU per arm against the IoU of always predicting the training set's mean box."""

from __future__ import annotations

import base64
import io
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..figures import FigureMaker
from ..metrics import column, diverged, final_acc, mean_of, values
from ..parts import against, equivalent, tested
from ..section import Figure, Section, fmt
from ..stats import Diff, one_sample, welch
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # CIFAR-10 order
ROLES = {"l2": "joint, L2 box loss", "smooth_l1": "joint, smooth-L1 box loss", "class_only": "classification only"}
IOU_MARGIN = 0.05  # L2 and smooth-L1 "localize equally well" when their IoU difference is surely within ±0.05
ACC_MARGIN = 0.03  # the box head "costs no class accuracy" when joint is surely no more than 3 points below class-only
TRUE_COLOUR, PRED_COLOUR = "#00c853", "#ff6d00"


def role(row: pd.Series) -> str:
    """A run's role from its config: class_only (box_weight = 0), else its box loss (l2 | smooth_l1)."""
    weight = float(row.get("config.box_weight") if row.get("config.box_weight") is not None else 1.0)
    return "class_only" if weight == 0 else str(row.get("config.box_loss"))


def iou(row: pd.Series) -> float:
    """Final test IoU; a diverged run counts as 0 (it predicts no usable box)."""
    return 0.0 if diverged(row) else column("test_iou")(row)


def _non_inferior(a: list[float], b: list[float], margin: float) -> Diff:
    """Welch test of mean(a) − (mean(b) − margin), reported on that shifted scale: a − b > −margin (non-inferiority)
    holds when this is significantly > 0."""
    return welch(a, [v - margin for v in b if v is not None and math.isfinite(v)])


def _decode(png: str) -> np.ndarray | None:
    try:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
    except Exception:  # absent or not a PNG: nothing to draw
        return None


def sample_figure(figs: FigureMaker, runs: pd.DataFrame, order: list[str]):
    """Predicted (orange, dashed) vs true (green) boxes on the 8 fixed test canvases, one row per arm (its lowest seed)."""
    rows, captions = [], []
    for arm in order:
        sub = runs[runs["arm"] == arm].sort_values("seed")
        row = next((r for _, r in sub.iterrows() if isinstance(r.get("samples.png"), str)), None)
        strip = _decode(row["samples.png"]) if row is not None else None
        if strip is None:
            continue
        listed = lambda key, row=row: row.get(key) if isinstance(row.get(key), list) else None  # noqa: E731 (NaN when absent)
        true, pred = listed("samples.true_box") or [], listed("samples.pred_box")
        labels, guesses = listed("samples.label") or [], listed("samples.pred_label")
        side = strip.shape[0]
        n = min(strip.shape[1] // side, len(true))
        imgs, boxes, caps = [], [], []
        for j in range(n):
            imgs.append(strip[:, j * side : (j + 1) * side])
            drawn = [(*true[j], TRUE_COLOUR, "-")]
            text = CLASSES[labels[j]] if j < len(labels) else ""
            if isinstance(pred, list) and j < len(pred) and pred[j] is not None:
                drawn.append((*pred[j], PRED_COLOUR, "--"))
                text += f"\nIoU {_pair_iou(pred[j], true[j]):.2f}"
            if isinstance(guesses, list) and j < min(len(guesses), len(labels)):
                text += f", said {CLASSES[guesses[j]]}" if guesses[j] != labels[j] else ", class ✓"
            boxes.append(drawn)
            caps.append(text)
        rows.append((f"{arm}\n(seed {int(row['seed'])})", imgs, boxes))
        captions.append(caps)
    return boxes_figure(
        figs,
        "localization-boxes",
        "Predicted vs true boxes on fixed test canvases",
        rows,
        captions,
        caption="green: true box; orange dashed: the box head's prediction; titles: true class, IoU, and "
        "the class head's answer. The same 8 test canvases (one per class 0–7) in every run; "
        "classification-only runs never train their box head, so its box is an untrained guess.",
    )


def _pair_iou(a: list[float], b: list[float]) -> float:
    """IoU of two (cx, cy, w, h) boxes (the report's own copy of bench.engine.localize.box_iou, without torch)."""
    aw, ah, bw, bh = max(a[2], 0), max(a[3], 0), max(b[2], 0), max(b[3], 0)
    ix = max(0.0, min(a[0] + aw / 2, b[0] + bw / 2) - max(a[0] - aw / 2, b[0] - bw / 2))
    iy = max(0.0, min(a[1] + ah / 2, b[1] + bh / 2) - max(a[1] - ah / 2, b[1] - bh / 2))
    union = aw * ah + bw * bh - ix * iy
    return ix * iy / union if union > 0 else 0.0


@analysis("localization")
def localization(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    runs = runs.assign(_role=[role(r) for _, r in runs.iterrows()])
    of = {k: runs[runs["_role"] == k] for k in ROLES}
    order = [a for k in ROLES for a in dict.fromkeys(of[k].sort_values("start_time")["arm"])]
    baseline = mean_of(values(runs, column("test_iou_mean_box")))
    sec.tables.append(
        arm_table(
            "Per arm: class accuracy and box IoU on the fixed test canvases",
            runs,
            [
                ("test acc %", final_acc("test"), 100),
                ("test IoU", iou, 1),
                ("validation IoU", column("val_iou"), 1),
                ("test cross-entropy", column("test_loss"), 1),
            ],
            order=order,
            fixed=[("mean-box IoU", column("test_iou_mean_box"))],
            note="IoU: mean over test canvases of the predicted box's intersection over union with the true one. Mean-box "
            "IoU: always predicting the training boxes' mean box (a position-blind guess); it is the reference for "
            "every arm. The classification-only arm's box head is never trained: its IoU is that of an untrained "
            "head, shown for completeness, not a baseline. Diverged runs count as chance accuracy and IoU 0.",
        )
    )
    l2, sl1, cls = of["l2"], of["smooth_l1"], of["class_only"]
    acc_l2, acc_cls = values(l2, final_acc("test")), values(cls, final_acc("test"))
    raw_acc = welch(acc_l2, acc_cls)
    parts = [
        against(
            "A box-regression head trained with an L2 loss beside the class head localizes the object: its test IoU "
            "beats the mean-box baseline",
            "IoU(joint, L2) − mean-box IoU, test canvases",
            l2,
            iou,
            baseline,
            unit="IoU",
            evidence=f"IoU {fmt(mean_of(values(l2, iou)))} vs mean box {fmt(baseline)}",
            test="one-sample t-test against the baseline",
        ),
        equivalent(
            f"L2 and smooth-L1 box losses localize equally well (both L2-type): IoU within ±{IOU_MARGIN:g}",
            "IoU(L2) − IoU(smooth-L1), test canvases",
            l2,
            sl1,
            iou,
            IOU_MARGIN,
            unit="IoU",
            scale=1.0,
            evidence=f"IoU {fmt(mean_of(values(l2, iou)))} (L2) vs {fmt(mean_of(values(sl1, iou)))} (smooth-L1)",
        ),
        tested(
            f"The box head sits beside the classifier at no real cost: joint (L2) class accuracy is not more than "
            f"{ACC_MARGIN * 100:g} points below classification-only training",
            f"acc(joint, L2) − acc(class only) + {ACC_MARGIN * 100:g} pts (non-inferiority margin)",
            "Welch t-test (non-inferiority: the difference plus the margin is > 0)",
            _non_inferior(acc_l2, acc_cls, ACC_MARGIN),
            l2,
            cls,
            unit="pts",
            scale=100,
            evidence=f"accuracy {fmt(mean_of(acc_l2) * 100)}% vs {fmt(mean_of(acc_cls) * 100)}%; difference "
            f"{fmt(raw_acc.diff * 100)} pts [{fmt(raw_acc.lo * 100)}, {fmt(raw_acc.hi * 100)}]",
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    sl1_above = one_sample(values(sl1, iou), baseline)
    untrained = mean_of(values(cls, iou))
    sec.notes = [
        "What the claim describes is built, not measured: the box head outputs four real numbers (centre x, y, width, "
        "height in canvas units) and is trained by regression; the class head outputs 10 scores trained by "
        "cross-entropy. What is measured is whether that arrangement works: whether the regression head finds the "
        "object (IoU against a position-blind mean box), whether the L2 choice matters next to smooth-L1, and "
        "whether the shared trunk still classifies.",
        f"Smooth-L1 is also an L2-type loss: here both are applied to standardised box targets (training mean and std), "
        f"where smooth-L1 equals 0.5·d² for errors under one standard deviation and grows linearly beyond; the L2 arm is "
        f"0.5·d² everywhere, so the arms differ only in how hard large errors pull. Smooth-L1 vs mean box: "
        f"{fmt(sl1_above.diff)} IoU [{fmt(sl1_above.lo)}, {fmt(sl1_above.hi)}].",
        f"The classification-only arm (box loss weight 0) still carries a box head, never trained: its IoU "
        f"({fmt(untrained)}) is that of an untrained head. The reference for every IoU is the mean-box baseline "
        f"({fmt(baseline)}): what always guessing the average training box scores, without looking at the image.",
        "One learning rate for every arm (no per-arm tuning): the two box losses coincide for small errors, and the "
        "runner tunes on validation accuracy, which says nothing about boxes. The box head pools the last feature map "
        "to a 4×4 grid; global average pooling alone would throw away where the object is.",
    ]
    sec.figures.append(
        figs.curves(
            "localization-curves",
            "Box IoU and class accuracy over training",
            runs,
            [("test_iou", "test IoU"), ("test_acc", "test accuracy")],
            hue_order=order,
            caption="band = mean over seeds with its 95% t interval; epoch 0 is at initialisation. "
            f"The mean-box baseline IoU is {fmt(baseline)}.",
        )
    )
    sec.figures.append(sample_figure(figs, runs, order))
    return sec


def boxes_figure(
    figs: FigureMaker,
    name: str,
    title: str,
    rows: list[tuple[str, list[np.ndarray], list[list[tuple]]]],
    captions: list[list[str]],
    caption: str = "",
) -> Figure | None:
    """A grid of images with boxes drawn on them: one row per (label, images (H, W, 3) uint8, boxes per image
    as (cx, cy, w, h in image-side units, colour, line style)), each tile titled by `captions[row][col]`."""
    if not figs.enabled or not rows or not rows[0][1]:
        return None
    n_cols = max(len(imgs) for _, imgs, _ in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.55 * n_cols + 1.0, 1.75 * len(rows) + 0.5), squeeze=False)
    for i, (label, imgs, boxes) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j >= len(imgs):
                ax.axis("off")
                continue
            img = imgs[j]
            side_y, side_x = img.shape[:2]
            ax.imshow(img, interpolation="nearest", extent=(0, side_x, side_y, 0))
            for cx, cy, w, h, colour, style in boxes[j]:
                ax.add_patch(
                    matplotlib.patches.Rectangle(
                        ((cx - w / 2) * side_x, (cy - h / 2) * side_y),
                        w * side_x,
                        h * side_y,
                        fill=False,
                        edgecolor=colour,
                        linestyle=style,
                        linewidth=1.6,
                    )
                )
            ax.set_xlim(0, side_x)
            ax.set_ylim(side_y, 0)
            ax.set_title(captions[i][j], fontsize=6.5)
            if j == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    return figs.save(fig, name, title, caption)
