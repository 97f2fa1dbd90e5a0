"""Whole-batch augmentation (random crop with zero padding, horizontal flip), drawn from a caller's generator
on the generator's device (a trial's own, on its training device: no host round trip)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop from the zero-padded batch (offsets 0..2*pad px) and random horizontal flip.

    Each image of x (B, C, H, W) gets its own offsets/flip. Random numbers are drawn on the
    generator's device (default: x's device and its default generator) and moved to x's
    device, so a CPU generator works for a GPU batch and gives the same draws.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x.clone()
    b, _, h, w = x.shape
    dev = generator.device if generator is not None else x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    flipped = torch.randint(0, 2, (b,), generator=generator, device=dev).to(x.device).bool()
    if not flip:
        flipped.zero_()
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flipped[:, None], cols.flip(1), cols) + ox[:, None]  # (B, W)
    # Gather rows then columns: two cheap index_select-like ops, no loop over images.
    out = padded.gather(2, rows[:, None, :, None].expand(b, x.shape[1], h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, x.shape[1], h, w))
