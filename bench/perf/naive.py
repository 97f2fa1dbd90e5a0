"""The `naive` row of `bench speed`: how a first PyTorch tutorial trains CIFAR-10 (torchvision's CIFAR10 dataset,
per-image PIL transforms, a DataLoader, fp32, torch.optim), on the same images as the engine."""

from __future__ import annotations

import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

from torchvision import datasets


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


def train_naive(cfg, data, device, workers: int) -> dict[str, Any]:
    """cfg.epochs epochs of cfg's model on cfg.n_train training images; cumulative seconds per epoch."""
    import torch
    from torch import nn
    from torchvision import transforms

    from bench.data import make_splits
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
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
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
