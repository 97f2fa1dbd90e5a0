"""Canvas placement for localization: each 32x32 image resized and pasted at a random position on a
larger canvas; the box it occupies is the regression target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Each 32x32 image is resized (bilinear) to a random integer width and height and pasted at a
# random integer position on a larger square canvas. A placement is (x0, y0, w, h) in pixels:
# top-left corner and size. The box a model regresses is (cx, cy, w, h) in canvas units (0..1),
# cx, cy being the box centre. Inside the box the canvas holds the resized image, outside it the
# background, exactly (tests/test_localization.py checks both).
CANVAS_SIDE = (0.25, 0.75)  # pasted width and height as fractions of the canvas side (16..48 px on 64)
CANVAS_ASPECT = (4, 3)  # a pasted image's longer side is at most 4/3 of its shorter side
CANVAS_GREY = 128  # the plain background's value, every channel
# Evaluation placements come from these seeds, never the trial's: every trial sees the same
# validation and test canvases. Placements are drawn for the whole source array (50,000 training
# or 10,000 test images) and indexed by image, so an image's placement does not depend on n_train/n_test.
PLACEMENT_SEEDS = {"train": 1000, "val": 1001, "test": 1002}


def side_range(canvas: int) -> tuple[int, int]:
    """(smallest, largest) pasted width/height in pixels on a `canvas`-pixel canvas."""
    return max(1, round(CANVAS_SIDE[0] * canvas)), min(canvas, round(CANVAS_SIDE[1] * canvas))


def draw_placements(n: int, canvas: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n random placements, int64 (n, 4) = (x0, y0, w, h) in pixels, on the generator's device.

    w is uniform over side_range(canvas); h uniform over the sizes in that range within the
    aspect limit of w; the position uniform over those that keep the whole image on the canvas.
    """
    lo, hi = side_range(canvas)
    big, small = CANVAS_ASPECT
    dev = generator.device if generator is not None else "cpu"
    w = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)
    h_lo = torch.clamp((small * w + big - 1) // big, min=lo)  # ceil(w * 3/4), integer exact
    h_hi = torch.clamp(big * w // small, max=hi)  # floor(w * 4/3)
    u = torch.rand((n, 3), generator=generator, device=dev, dtype=torch.float64)
    h = h_lo + (u[:, 0] * (h_hi - h_lo + 1)).long()
    x0 = (u[:, 1] * (canvas - w + 1)).long()
    y0 = (u[:, 2] * (canvas - h + 1)).long()
    return torch.stack([x0, y0, w, h], 1)


def placement_boxes(placements: torch.Tensor, canvas: int) -> torch.Tensor:
    """float32 (n, 4) boxes (cx, cy, w, h) in canvas units from pixel placements (x0, y0, w, h)."""
    p = placements.float()
    return torch.stack([p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2, p[:, 2], p[:, 3]], 1) / canvas


def paste(
    x: torch.Tensor, placements: torch.Tensor, canvas: int, background: str = "plain", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Paste uint8 images x (B, C, H, W) onto uint8 canvases (B, C, canvas, canvas) at `placements`.

    One grid_sample for the whole batch: inside its box a canvas pixel samples the image at the
    coordinate F.interpolate(..., mode="bilinear", align_corners=False) uses for a resize to
    (h, w); outside, the background: mid-grey (plain) or uniform 0..255 noise drawn per pixel
    from `generator` (noise).
    """
    b, c = x.shape[:2]
    p = placements.to(x.device).float()
    pix = torch.arange(canvas, device=x.device, dtype=torch.float32) + 0.5  # pixel centres
    gx = 2 * (pix[None, :] - p[:, 0:1]) / p[:, 2:3] - 1  # (B, canvas): -1..1 across the box
    gy = 2 * (pix[None, :] - p[:, 1:2]) / p[:, 3:4] - 1
    grid = torch.stack([gx[:, None, :].expand(b, canvas, canvas), gy[:, :, None].expand(b, canvas, canvas)], -1)
    img = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    img = img.round().clamp(0, 255).to(torch.uint8)
    inside = ((gx.abs() < 1)[:, None, :] & (gy.abs() < 1)[:, :, None])[:, None]  # (B, 1, canvas, canvas)
    if background == "noise":
        dev = generator.device if generator is not None else x.device
        back = torch.randint(0, 256, (b, c, canvas, canvas), generator=generator, device=dev, dtype=torch.uint8).to(x.device)
    elif background == "plain":
        back = torch.full((1, 1, 1, 1), CANVAS_GREY, dtype=torch.uint8, device=x.device)
    else:
        raise ValueError(f"unknown background {background!r}; valid: plain, noise")
    return torch.where(inside, img, back)


def place_on_canvas(
    x: torch.Tensor, canvas: int, background: str = "plain", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh random placements for a batch (training: new ones every epoch): (canvases, boxes)."""
    placements = draw_placements(len(x), canvas, generator)
    return paste(x, placements, canvas, background, generator), placement_boxes(placements, canvas).to(x.device)


def fixed_canvases(
    x: torch.Tensor, index: torch.Tensor, n_source: int, split: str, canvas: int, background: str = "plain", chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed canvases of `split` ("train", "val" or "test") for images x = source[index].

    Placements are drawn for all `n_source` images of the source array with PLACEMENT_SEEDS[split]
    and picked by `index`; a noise background is drawn from the same seed, in the order of x.
    Returns (uint8 canvases (N, C, canvas, canvas), float32 boxes (N, 4)) on x's device.
    """
    gen = torch.Generator().manual_seed(PLACEMENT_SEEDS[split])
    placements = draw_placements(n_source, canvas, gen)[index.cpu()]
    out = torch.empty((len(x), x.shape[1], canvas, canvas), dtype=torch.uint8, device=x.device)
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        out[part] = paste(x[part], placements[part], canvas, background, gen)
    return out, placement_boxes(placements, canvas).to(x.device)
