"""Training throughput tables and the time estimate `bench study --plan` gives: seconds per training image
as a line in the model's multiply-adds per image, fitted to what `bench speed` measured on a device, or to a
built-in table whose source is named."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.cache import cache_dir

# Built-in measurements, per device kind: (model label, multiply-adds per image forward, training images/s
# of one trial at batch 128, with evaluation excluded). Each names its source.
BUILTIN: dict[str, dict[str, Any]] = {
    "cpu": {
        "source": "bench speed (eager, one trial) on a shared 2-core x86_64 VM on 2026-11-30: mlp 3,787, cnn 300 and "
        "resnet20 68 images/s (its speed for convolutions varied about 5x within the day)",
        "points": [("mlp", 920_064, 3787.0), ("cnn", 10_323_200, 300.0), ("resnet20", 40_551_040, 68.0)],
        "speedup": 1.0,  # aggregate throughput of the default concurrency over one trial at a time
    },
    "cuda": {
        "source": "issue #11: NVIDIA H200, torch 2.11, bf16, code 55381fb (before CUDA graphs): resnet20 11,075 "
        "images/s one trial, 15,588 aggregate packed k=4 (x1.15 over 13,553); other models scaled by their "
        "multiply-adds (no other model was measured there)",
        "points": [("resnet20", 40_551_040, 11075.0)],
        "speedup": 1.15,
    },
}
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only, no backward)


def table_path(device_kind: str) -> Path:
    """Where `bench speed` leaves its latest measurement for a device kind ("cpu", "cuda")."""
    return cache_dir() / "speed" / f"{device_kind}.json"


@dataclass(frozen=True)
class Throughput:
    """Seconds per training image = per_image + per_mac * multiply-adds per image (one trial alone), and
    the aggregate speed-up of the default concurrency; `source` says where the figures come from."""

    per_image: float
    per_mac: float
    speedup: float
    source: str

    def seconds(self, macs: float, train_images: float, eval_images: float) -> float:
        per = self.per_image + self.per_mac * macs
        return per * (train_images + EVAL_COST * eval_images) / self.speedup


def fit(points: list[tuple[str, float, float]], speedup: float, source: str) -> Throughput:
    """The line through (macs, seconds per image) points: least squares for 2+ points; one point gives a line
    through the origin (cost in proportion to multiply-adds, which for nets of one family also counts their layers
    and so their kernel launches)."""
    xs = [float(m) for _, m, _ in points]
    ys = [1.0 / float(r) for _, _, r in points]
    if len(points) >= 2 and max(xs) > min(xs):
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        slope = max(slope, 0.0)
        return Throughput(max(my - slope * mx, 0.0), slope, speedup, source)
    return Throughput(0.0, ys[0] / xs[0], speedup, source)


def load_table(device_kind: str) -> dict[str, Any]:
    """What `bench speed` measured on this device kind: {"device", "date", "models": {model: {"macs", "rows"}}}."""
    try:
        data = json.loads(table_path(device_kind).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data.get("models"), dict) else {}


def save_measurement(device_kind: str, model: str, macs: int, rows: list[dict[str, Any]], json_path: str | None = None) -> None:
    """Keep `bench speed`'s rows for `model` in the device's table (other models' rows stay), and in --json FILE."""
    import time

    import torch

    from bench.data.cache import atomic_write_text

    table = load_table(device_kind) or {"models": {}}
    device = next((r["device"] for r in rows if "device" in r), device_kind)
    table.update(device=device, date=time.strftime("%Y-%m-%d %H:%M:%S"), torch=torch.__version__)
    table["models"][model] = {"macs": macs, "rows": rows}
    text = json.dumps(table, indent=1, default=str)
    try:
        table_path(device_kind).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(table_path(device_kind), text)
    except OSError:
        pass  # a read-only cache only costs `--plan` its measured estimate
    if json_path:
        Path(json_path).write_text(text)


# The variants of `bench speed` the study runner trains with on each device kind: one trial, packs in the engine's
# default mode there (bench.engine.loop.default_mode), several processes.
USABLE = {"cuda": ("graph", "streams", "workers"), "cpu": ("eager", "vmap")}
FAMILY = {"mlp": "mlp", "linear": "mlp"}  # fully connected models scale with their multiply-adds alone; the rest are conv nets


def family(model: str) -> str:
    """ "mlp" or "conv": models whose cost per image follows one line (a conv net's cost also grows with its feature maps)."""
    return FAMILY.get(model, "conv")


def measured(device_kind: str) -> tuple[list[tuple[str, float, float]], float, str] | None:
    """The line through what `bench speed` measured here (the one-trial path of each model), if anything."""
    table = load_table(device_kind)
    points, speedups = [], []
    for model, entry in table.get("models", {}).items():
        usable = USABLE["cuda" if device_kind == "cuda" else "cpu"]  # what the runner can train with here
        rows = [r for r in entry.get("rows", []) if "error" not in r and r["variant"] in usable]
        one = next((r for r in rows if r["variant"] in ("graph", "eager")), None)
        if one:
            points.append((model, entry["macs"], one["images_per_s"]))
            speedups.append(max([r["images_per_s"] / one["images_per_s"] for r in rows if r["k"] * r["n"] > 1] + [1.0]))
    if not points:
        return None
    source = f"bench speed on {table.get('device', device_kind)}, {table.get('date', '?')} ({table_path(device_kind)})"
    return points, min(speedups), source


def throughput(device_kind: str, model: str = "cnn") -> Throughput:
    """Seconds per image for models of `model`'s family (`family`) on this device kind: the line through what
    `bench speed` measured here, completed with the built-in figures of the family's models it did not measure."""
    kind = "cuda" if device_kind == "cuda" else "cpu"
    fam = family(model)
    b = BUILTIN[kind]
    builtin = [pt for pt in b["points"] if family(pt[0]) == fam] or b["points"]
    got = measured(kind)
    if got is None:
        return fit(builtin, b["speedup"], "built-in: " + b["source"])
    points, speedup, source = got
    points = [pt for pt in points if family(pt[0]) == fam]
    names = {name for name, _, _ in points}
    extra = [pt for pt in builtin if pt[0] not in names]
    if not points:
        return fit(builtin, speedup, f"built-in {fam} figures ({b['source']}); concurrency from {source}")
    if extra:
        source += f"; completed with the built-in {', '.join(n for n, _, _ in extra)} figure ({b['source']})"
    return fit(points + extra, speedup, source)


def macs_per_image(cfg) -> int:
    """Multiply-adds of one forward pass of cfg's model on one input (conv and linear layers), counted on
    the meta device: nothing is computed."""
    import torch
    from torch import nn

    from bench.engine.models import build_model

    shape = (
        (cfg.pca_k,)
        if cfg.normalization in ("pca", "pca_whiten")
        else (3, cfg.canvas, cfg.canvas)
        if cfg.task == "localize"
        else (3, 32, 32)
    )
    with torch.device("meta"):
        if cfg.task == "transfer" and cfg.source == "imagenet":  # ResNet-18 on the image upsampled to 224 px
            from bench.engine.transfer import imagenet_backbone, target_model

            model = target_model(cfg, imagenet_backbone(None), None)
        else:
            model = build_model(cfg, shape, None)
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()  # in/groups * kh * kw
            total += k * output[0].numel()
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()  # BatchNorm in training mode refuses a batch of one
    with torch.no_grad():
        model(torch.empty((1, *shape), device="meta"))
    for h in handles:
        h.remove()
    return total


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
