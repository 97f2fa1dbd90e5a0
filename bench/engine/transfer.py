"""Transfer learning: a source model's features reused for new classes (task=transfer).

Source (cfg.source):
  cifar5   the trial's own model (cfg.model/depth/width/...) trained here on CIFAR-10 classes
           0-4 (airplane, automobile, bird, cat, deer) for pretrain_epochs, with the trial's
           optimiser at pretrain_lr (0 = the trial's lr); n_train source images (0 = all 25,000).
           Trained once per setting and cached (see source_key); every target trial reuses it.
  imagenet torchvision's ResNet-18 with the ImageNet weights in cfg.weights (a local file or a URL,
           downloaded once into the cache); inputs are resized to IMAGENET_SIZE pixels and use
           ImageNet's normalisation; cfg.model/depth/width/normalization do not apply.

Target: classes 5-9 (dog, frog, horse, ship, truck), labels 0-4, `per_class` training images per
class; n_val and n_test count target images (n/5 per class; n_test=0: all 5,000 target test images).

cfg.transfer decides what trains on the target:
  scratch  the same architecture, randomly initialised (no source needed)
  linear   the source's features, frozen, and a new linear head (5 outputs)
  mlp      the source's features, frozen, and a new MLP head (one hidden layer of MLP_HEAD_WIDTH)
  finetune the source's features and a new linear head, all trained
Frozen features stay in eval mode while the head trains (BatchNorm keeps the source's statistics,
dropout is off), so they are a fixed function of the image.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from bench.config import ConfigError, TrialConfig, as_dict
from bench.data import (
    ChannelAffine,
    Cifar10,
    DataError,
    Normalizer,
    Splits,
    augment,
    class_subset_splits,
    fit_normalizer,
    iterate_batches,
)

from .components import ACTIVATIONS, OPTIMIZERS, SCHEDULES, apply_init
from .loop import autocast_for
from .models import Dropout, build_model

SOURCE_CLASSES = (0, 1, 2, 3, 4)  # pretraining classes
TARGET_CLASSES = (5, 6, 7, 8, 9)  # transfer classes, labels 0-4 in this order
MLP_HEAD_WIDTH = 256  # hidden units of the mlp head
SOURCE_VERSION = "v1"  # bump when source training changes, so old cached sources are not reused
IMAGENET_SIZE = 224  # pixels: the scale ImageNet features are learned at (at 32 px ResNet-18's last stage sees 1x1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, per RGB channel (0..1 units)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Config fields that do not change the cifar5 source (target-only or run settings); every other
# field is part of the source's cache key, so a new model option is keyed without a change here.
NOT_SOURCE = frozenset(
    {
        "task",
        "transfer",
        "per_class",
        "n_val",
        "n_test",
        "epochs",
        "lr",
        "test_noise",
        "device",
        "data_dir",
        "probe_size",
        "eval_train_size",
        "weights",
        "canvas",
        "background",
        "box_loss",
        "box_weight",
    }
)

MakeModel = Callable[[tuple[int, ...], torch.Generator], nn.Module]


class TransferNet(nn.Sequential):
    """Source features followed by a new head; the first `frozen` modules are fixed: no gradients,
    and eval mode even while the net trains."""

    def __init__(self, *modules: nn.Module, frozen: int = 0):
        super().__init__(*modules)
        self.frozen = frozen
        for m in list(self.children())[:frozen]:
            m.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        for m in list(self.children())[: getattr(self, "frozen", 0)]:
            m.eval()
        return self


def setup_transfer(cfg: TrialConfig, data: Cifar10, device: torch.device) -> tuple[Splits, Normalizer, MakeModel]:
    """(target splits, normaliser, make_model(in_shape, generator)) for one transfer trial.

    Trains (or loads from the cache) the cifar5 source, or loads the ImageNet weights, first.
    The global RNG is left as it was, so a trial's numbers do not depend on whether its source
    was cached.
    """
    splits = class_subset_splits(data, TARGET_CLASSES, cfg.per_class, cfg.n_val, cfg.n_test)
    if cfg.source == "imagenet":
        norm: Normalizer = ChannelAffine(
            torch.tensor(IMAGENET_MEAN)[:, None, None] * 255,
            torch.tensor(IMAGENET_STD)[:, None, None] * 255,
            tuple(data.train_x.shape[1:]),
        )
        state = None if cfg.transfer == "scratch" else load_imagenet_weights(cfg.weights)
        return splits, norm, lambda shape, gen: target_model(cfg, imagenet_backbone(state), gen)
    source = source_splits(data, cfg)
    norm = fit_normalizer(cfg.normalization, source.train_x, cfg.pca_k)  # the source's inputs, so its features match
    if cfg.transfer == "scratch":
        return splits, norm, lambda shape, gen: target_model(cfg, backbone_of(build_model(cfg, shape, gen)), gen)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        state = cifar5_source(cfg, data, device, source, norm)

    def make_model(shape: tuple[int, ...], gen: torch.Generator) -> nn.Module:
        model = source_model(cfg, shape, torch.Generator())
        model.load_state_dict(state)
        return target_model(cfg, backbone_of(model), gen)

    return splits, norm, make_model


# ---------------------------------------------------------------------- target models


def backbone_of(model: nn.Module) -> tuple[list[nn.Module], int]:
    """(every module of a bench model but its classifier head, the width of the features the head read)."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ConfigError(f"task=transfer needs a model ending in a linear head, got {type(model).__name__}")
    return list(model)[:-1], model[-1].in_features


def target_model(cfg: TrialConfig, parts: tuple[list[nn.Module], int], gen: torch.Generator) -> TransferNet:
    """Backbone `parts` + a new head with len(TARGET_CLASSES) outputs, frozen as cfg.transfer says."""
    backbone, dim = parts
    k = len(TARGET_CLASSES)
    if cfg.transfer == "mlp":
        head: list[nn.Module] = [nn.Linear(dim, MLP_HEAD_WIDTH, bias=not cfg.batchnorm)]
        if cfg.batchnorm:
            head.append(nn.BatchNorm1d(MLP_HEAD_WIDTH))
        head += [ACTIVATIONS.get(cfg.activation)(), Dropout(cfg.dropout, cfg.dropout_mode), nn.Linear(MLP_HEAD_WIDTH, k)]
    else:
        head = [nn.Linear(dim, k)]
    apply_init(nn.Sequential(*head), cfg, gen)
    frozen = len(backbone) if cfg.transfer in ("linear", "mlp") else 0
    return TransferNet(*backbone, *head, frozen=frozen)


def source_model(cfg: TrialConfig, in_shape: tuple[int, ...], gen: torch.Generator) -> nn.Sequential:
    """The cifar5 source: cfg's model with a head of len(SOURCE_CLASSES) outputs."""
    backbone, dim = backbone_of(build_model(cfg, in_shape, gen))
    head = nn.Linear(dim, len(SOURCE_CLASSES))
    apply_init(head, cfg, gen)
    return nn.Sequential(*backbone, head)


# ---------------------------------------------------------------------- cifar5 source


def source_splits(data: Cifar10, cfg: TrialConfig) -> Splits:
    """Source training images (classes 0-4, n_train/5 per class, 0 = all) and all their test images."""
    return class_subset_splits(data, SOURCE_CLASSES, cfg.n_train // len(SOURCE_CLASSES), 0, 0)


def source_config(cfg: TrialConfig) -> TrialConfig:
    """The config the source trains with: the trial's, at pretrain_lr for pretrain_epochs."""
    return dataclasses.replace(cfg, lr=cfg.pretrain_lr or cfg.lr, epochs=cfg.pretrain_epochs)


def source_key(cfg: TrialConfig, data: Cifar10) -> str:
    """Hash of everything the source depends on: its config fields (all but NOT_SOURCE), the data, the code version."""
    src = source_config(cfg)
    fields = {k: v for k, v in as_dict(src).items() if k not in NOT_SOURCE and k != "pretrain_lr"}
    blob = json.dumps(
        {"fields": fields, "lr": src.lr, "data": data.digest, "classes": SOURCE_CLASSES, "version": SOURCE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """$BENCH_CACHE_DIR, else ~/.cache/ablation-bench (where bench/data.py caches the images)."""
    return Path(os.environ.get("BENCH_CACHE_DIR") or "~/.cache/ablation-bench").expanduser()


def source_path(cfg: TrialConfig, data: Cifar10) -> Path:
    return cache_dir() / "sources" / f"cifar5-{cfg.model}-{source_key(cfg, data)}.pt"


def cifar5_source(
    cfg: TrialConfig, data: Cifar10, device: torch.device, source: Splits, norm: Normalizer
) -> dict[str, torch.Tensor]:
    """The trained source's state_dict: from the cache, else trained now and cached.

    A lock file serialises workers that need the same source: one trains, the others wait and load.
    """
    path = source_path(cfg, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.with_suffix(".lock")):
        saved = _load_source(path)
        if saved is not None:
            return saved["state_dict"]
        state, info = pretrain(source_config(cfg), source, norm, device)
        _atomic_save({"state_dict": state, "info": info}, path)
        return state


def pretrain(cfg: TrialConfig, source: Splits, norm: Normalizer, device: torch.device) -> tuple[dict, dict]:
    """Train source_model(cfg) on `source` for cfg.epochs; (state_dict on the CPU, info about the run)."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    norm = norm.to(device)
    amp = autocast_for(device)
    tx, ty = source.train_x.to(device), source.train_y.to(device)
    model = source_model(cfg, norm.out_shape, gen).to(device)
    optimizer = OPTIMIZERS.get(cfg.optimizer)(model.parameters(), cfg)
    steps = math.ceil(len(tx) / cfg.batch_size)
    lr_at = SCHEDULES.get(cfg.schedule)(steps * cfg.epochs)
    step = 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        for idx in iterate_batches(len(tx), cfg.batch_size, gen):
            idx = idx.to(device)
            xb = augment(tx[idx], gen) if cfg.augment else tx[idx]
            xb = norm(xb)
            if cfg.input_noise:
                xb = xb + cfg.input_noise * torch.randn(xb.shape, generator=gen).to(device)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_at(step)
            with amp():
                loss = nn.functional.cross_entropy(model(xb).float(), ty[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if not math.isfinite(float(loss.detach())):
            raise ConfigError(
                f"source pretraining diverged (loss {float(loss.detach())} in epoch {epoch}) at lr={cfg.lr}; "
                f"set a smaller pretrain_lr"
            )
    model.eval()
    with torch.no_grad():
        sx, sy = source.test_x.to(device), source.test_y.to(device)
        correct = sum(int((model(norm(sx[i : i + 512])).argmax(1) == sy[i : i + 512]).sum()) for i in range(0, len(sx), 512))
    info = {
        "test_acc": correct / max(len(sx), 1),
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "n_train": len(tx),
        "seconds": time.perf_counter() - t0,
        "device": str(device),
    }
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, info


def source_info(cfg: TrialConfig, data: Cifar10) -> dict | None:
    """What the cached cifar5 source of `cfg` records about its training (test_acc on classes 0-4,
    seconds, ...), or None when it is not cached."""
    saved = _load_source(source_path(cfg, data))
    return None if saved is None else saved["info"]


def _load_source(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(saved.get("state_dict"), dict):
            return saved
    except Exception:
        pass
    return None  # unreadable (e.g. a truncated file from an old crash): trained again and replaced


def _atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: readers see all or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (released by the OS if the process dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------- imagenet source


def load_imagenet_weights(weights: str) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 state_dict from a local file or an http(s) URL (downloaded once into
    the cache); loaded with weights_only=True. Raises DataError (one line) when it is missing,
    unreadable or not ResNet-18 weights."""
    if weights.startswith(("http://", "https://")):
        path = cache_dir() / "weights" / Path(weights.split("?")[0]).name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(weights, str(path), progress=False)
            except Exception as e:
                raise DataError(
                    f"cannot download weights {weights} ({type(e).__name__}: {str(e)[:200]}); download "
                    f"it elsewhere and pass weights=<local file>"
                ) from None
    else:
        path = Path(weights).expanduser()
    if not path.is_file():
        raise DataError(
            f"weights file {path} does not exist; pass weights=<torchvision ResNet-18 ImageNet .pth "
            f"file> or an http(s) URL to download it from"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(
            f"weights file {path} is unreadable as a state_dict ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); pass torchvision ResNet-18 weights"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    expected = _resnet18().state_dict()
    if (
        not isinstance(state, dict)
        or set(state) != set(expected)
        or any(not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape for k, v in expected.items())
    ):
        raise DataError(
            f"weights file {path} does not hold torchvision ResNet-18 weights (keys or shapes differ); "
            f"pass e.g. resnet18-f37072fd.pth"
        )
    return state


def _resnet18() -> nn.Module:
    import torchvision  # lazy: only the imagenet source needs it

    return torchvision.models.resnet18(weights=None)


def imagenet_backbone(state: dict[str, torch.Tensor] | None) -> tuple[list[nn.Module], int]:
    """ResNet-18's feature extractor (resize to IMAGENET_SIZE, conv stages, global pool), with
    `state` loaded (None: randomly initialised, for transfer=scratch)."""
    net = _resnet18()
    if state is not None:
        net.load_state_dict(state)
    resize = nn.Upsample(size=(IMAGENET_SIZE, IMAGENET_SIZE), mode="bilinear", align_corners=False)
    parts = [
        resize,
        net.conv1,
        net.bn1,
        net.relu,
        net.maxpool,
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
        net.avgpool,
        nn.Flatten(),
    ]
    return parts, net.fc.in_features
