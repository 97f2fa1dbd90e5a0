"""Canvas placement (bench/data.py) and the localization trial (bench/localization.py): a pasted image's
box matches its pixels, boxes stay on the canvas, sizes stay in range, placements are seeded and the
evaluation canvases do not depend on the trial; IoU on hand cases; a short run learns boxes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.config import ConfigError
from bench.data.canvas import (
    CANVAS_ASPECT,
    CANVAS_GREY,
    draw_placements,
    fixed_canvases,
    place_on_canvas,
    placement_boxes,
    side_range,
)
from bench.engine.localize import box_iou, box_loss
from bench.engine.loop import train_trial
from bench.engine.rules import make_config

CANVAS = 64


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def pixel_box(box: torch.Tensor, canvas: int = CANVAS) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) in pixels from a (cx, cy, w, h) box in canvas units."""
    cx, cy, w, h = (float(v) * canvas for v in box)
    return round(cx - w / 2), round(cy - h / 2), round(w), round(h)


@pytest.mark.parametrize("background", ["plain", "noise"])
def test_pixels_inside_the_box_are_the_resized_image_and_outside_the_background(background):
    x = images(64)
    canvases, boxes = place_on_canvas(x, CANVAS, background, torch.Generator().manual_seed(3))
    exact = total = 0
    outside_values = []
    for i in range(len(x)):
        x0, y0, w, h = pixel_box(boxes[i])
        resized = F.interpolate(x[i : i + 1].float(), size=(h, w), mode="bilinear", align_corners=False)[0].round()
        diff = (canvases[i, :, y0 : y0 + h, x0 : x0 + w].float() - resized).abs()
        assert diff.max() <= 1, i  # bilinear resize, up to float rounding at .5
        exact += int((diff == 0).sum())
        total += diff.numel()
        outside = torch.ones(CANVAS, CANVAS, dtype=torch.bool)
        outside[y0 : y0 + h, x0 : x0 + w] = False
        values = canvases[i][:, outside]
        if background == "plain":
            assert (values == CANVAS_GREY).all(), i
        outside_values.append(values.flatten().float())
    assert exact / total > 0.99
    if background == "noise":  # uniform 0..255, redrawn per image
        v = torch.cat(outside_values)
        assert abs(float(v.mean()) - 127.5) < 2 and float(v.min()) == 0 and float(v.max()) == 255
        assert not torch.equal(canvases[0, :, :4, :4], canvases[1, :, :4, :4])


def test_boxes_stay_inside_the_canvas_and_sizes_in_range():
    p = draw_placements(20000, CANVAS, torch.Generator().manual_seed(0))
    x0, y0, w, h = p.T
    lo, hi = side_range(CANVAS)
    assert (lo, hi) == (16, 48)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= CANVAS).all() and (y0 + h <= CANVAS).all()
    assert int(w.min()) == lo and int(w.max()) == hi and int(h.min()) == lo and int(h.max()) == hi  # the whole range is used
    big, small = CANVAS_ASPECT
    assert (small * h <= big * w).all() and (small * w <= big * h).all()  # aspect within 4:3 either way
    assert int(x0.min()) == 0 and int((x0 + w).max()) == CANVAS  # positions reach both edges
    b = placement_boxes(p, CANVAS)
    assert (b[:, 0] - b[:, 2] / 2 >= 0).all() and (b[:, 0] + b[:, 2] / 2 <= 1 + 1e-6).all()
    assert (b[:, 1] - b[:, 3] / 2 >= 0).all() and (b[:, 1] + b[:, 3] / 2 <= 1 + 1e-6).all()
    assert abs(float(b[:, 0].mean()) - 0.5) < 0.01 and abs(float(b[:, 1].mean()) - 0.5) < 0.01  # no side favoured


def test_same_seed_same_placement_and_fixed_canvases_depend_only_on_split_and_image():
    a = draw_placements(100, CANVAS, torch.Generator().manual_seed(5))
    assert torch.equal(a, draw_placements(100, CANVAS, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, draw_placements(100, CANVAS, torch.Generator().manual_seed(6)))
    source = images(300, seed=1)
    full, full_boxes = fixed_canvases(source, torch.arange(300), 300, "test", CANVAS)
    index = torch.tensor([3, 17, 150, 299])
    part, part_boxes = fixed_canvases(source[index], index, 300, "test", CANVAS)
    assert torch.equal(part, full[index]) and torch.equal(part_boxes, full_boxes[index])  # whatever the subset
    torch.manual_seed(123)  # the global RNG plays no part
    again, _ = fixed_canvases(source, torch.arange(300), 300, "test", CANVAS)
    assert torch.equal(again, full)
    _, val_boxes = fixed_canvases(source, torch.arange(300), 300, "val", CANVAS)
    assert not torch.equal(val_boxes, full_boxes)  # each split has its own placements


def test_iou_on_hand_cases():
    def iou(a, b):
        return float(box_iou(torch.tensor(a), torch.tensor(b)))

    assert iou([0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]) == pytest.approx(1.0)
    assert iou([0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]) == pytest.approx(1 / 3)  # half shifted: 0.02 / 0.06
    assert iou([0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.2, 0.2]) == pytest.approx(0.25)  # contained
    assert iou([0.2, 0.2, 0.2, 0.2], [0.4, 0.2, 0.2, 0.2]) == 0.0  # edges touch
    assert iou([0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]) == 0.0  # disjoint
    assert iou([0.5, 0.5, -0.2, 0.2], [0.5, 0.5, 0.2, 0.2]) == 0.0  # a negative size is no box
    assert iou([0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]) == 0.0  # empty boxes: 0, not NaN
    assert iou([0.3, 0.5, 0.2, 0.4], [0.4, 0.6, 0.2, 0.2]) == pytest.approx(0.02 / 0.10)  # 0.1 x 0.2 overlap; areas 0.08 + 0.04
    batch = box_iou(torch.rand(7, 4) * 0.5 + 0.1, torch.rand(7, 4) * 0.5 + 0.1)
    assert batch.shape == (7,) and ((batch >= 0) & (batch <= 1)).all()


def test_box_losses_agree_below_one_std_and_differ_in_the_tails():
    t = torch.zeros(4, 4)
    small, large = torch.full((4, 4), 0.5), torch.full((4, 4), 3.0)
    assert float(box_loss(small, t, "l2")) == pytest.approx(float(box_loss(small, t, "smooth_l1")))
    assert float(box_loss(large, t, "l2")) == pytest.approx(4.5) and float(box_loss(large, t, "smooth_l1")) == pytest.approx(2.5)


def test_config_rejects_what_localization_cannot_run():
    for bad in (dict(model="mlp"), dict(augment=True), dict(canvas=16), dict(box_weight=-1.0), dict(normalization="zca")):
        with pytest.raises(ConfigError):
            make_config(dict(task="localize", **bad))


TINY = dict(
    task="localize", model="cnn", width=8, n_val=200, n_test=200, eval_train_size=200, probe_size=64, device="cpu", lr=0.05
)


def test_short_run_learns_boxes_and_records_what_the_report_needs(cifar):
    cfg = make_config(dict(n_train=2000, epochs=2, **TINY))
    r = train_trial(cfg, progress=False, data=cifar)
    assert r["status"] == "ok"
    json.dumps(r, allow_nan=False)
    for key in (
        "test_acc",
        "val_acc",
        "train_acc",
        "test_loss",
        "test_iou",
        "val_iou",
        "train_iou",
        "test_box_loss",
        "best_val_acc",
        "best_val_iou",
        "test_iou_mean_box",
        "seconds",
        "train_seconds",
        "images_per_s",
        "n_params",
        "device",
        "data_source",
        "git_commit",
        "config.box_loss",
        "config.box_weight",
    ):
        assert r[key] is not None, key
    for key in ("epoch", "val_acc", "test_acc", "test_iou", "val_iou", "train_box_loss", "A01.act_std"):
        assert len(r[f"history.{key}"]) == 3, key  # epoch 0 = at initialisation
    assert len(r["history.train_box_loss_running"]) == 2
    box = r["history.train_box_loss"]
    assert box[-1] < 0.6 * box[0], box  # the box head learns
    assert r["test_iou"] > r["history.test_iou"][0] + 0.1 and r["test_iou"] > r["test_iou_mean_box"], (
        r["history.test_iou"],
        r["test_iou_mean_box"],
    )
    assert 0.2 < r["test_iou_mean_box"] < 0.5  # a centred mid-size box overlaps most placements partly
    assert r["n_test_used"] == 200 and r["config.task"] == "localize"
    png = Image.open(io.BytesIO(base64.b64decode(r["samples.png"])))
    assert png.size == (8 * 64, 64)
    assert len(r["samples.true_box"]) == len(r["samples.pred_box"]) == len(r["samples.label"]) == 8
    assert sorted(r["samples.label"]) == list(range(8))  # one test image of each of classes 0..7
    # the sample boxes are where the sample images are: the background is grey outside each true box
    strip = np.asarray(png)
    for i, b in enumerate(r["samples.true_box"]):
        x0, y0, w, h = pixel_box(torch.tensor(b))
        tile = strip[:, i * 64 : (i + 1) * 64].copy()
        tile[y0 : y0 + h, x0 : x0 + w] = CANVAS_GREY
        assert (tile == CANVAS_GREY).all(), i

    other = train_trial(make_config({"seed": 1, "n_train": 200, "epochs": 1}, base=cfg), progress=False, data=cifar)
    assert other["samples.true_box"] == r["samples.true_box"] and other["samples.png"] == r["samples.png"]  # test canvases fixed
    assert other["test_iou_mean_box"] == pytest.approx(r["test_iou_mean_box"], abs=0.03)  # near: only n_train changed


def test_huge_learning_rate_diverges_as_a_result(cifar):
    cfg = make_config({**TINY, "n_train": 200, "epochs": 1, "batchnorm": False, "optimizer": "sgd", "lr": 1e6})
    r = train_trial(cfg, progress=False, data=cifar)
    assert r["status"] == "diverged" and r["diverged_epoch"] == 1 and r["test_iou"] is None
    json.dumps(r, allow_nan=False)
