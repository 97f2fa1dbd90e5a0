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
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.config import ConfigError, TrialConfig, as_dict, with_role
from bench.data import ChannelAffine, Cifar10, DataError, Normalizer, Splits, atomic_save, cache_dir, class_subset_splits, locked

from .activations import ACTIVATIONS
from .device import resolve_device
from .fit import fit
from .graph import graphs_usable
from .inits import apply_init
from .models import Dropout, build_model
from .task import TASKS, Task
from .trial import Trial

SOURCE_CLASSES = (0, 1, 2, 3, 4)  # pretraining classes
TARGET_CLASSES = (5, 6, 7, 8, 9)  # transfer classes, labels 0-4 in this order
MLP_HEAD_WIDTH = 256  # hidden units of the mlp head
SOURCE_VERSION = "v2"  # bump when source training changes, so old cached sources are not reused (v2: the one loop)
IMAGENET_SIZE = 224  # pixels: the scale ImageNet features are learned at (at 32 px ResNet-18's last stage sees 1x1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, per RGB channel (0..1 units)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Config fields that change the cifar5 source, from TrialConfig's metadata (bench/config.py `knob`): every field
# but the target-only and run settings, so a new model option is part of the source's cache key without a change here.
SOURCE_FIELDS = with_role("source")


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


class Transfer(Task):
    """The target task: classes 5-9 (5-way), on features of a source network (see the module's docstring)."""

    name = "transfer"
    chance = 1 / len(TARGET_CLASSES)
    packable = False

    def rules(self, cfg: TrialConfig) -> list[tuple[bool, str]]:
        return [
            (
                cfg.per_class >= 0 and cfg.pretrain_epochs >= 1 and cfg.pretrain_lr >= 0,
                "per_class must be >= 0 (0 = all), pretrain_epochs >= 1 and pretrain_lr >= 0 (0 = the trial's lr)",
            ),
            (
                cfg.source != "imagenet" or cfg.transfer == "scratch" or bool(cfg.weights),
                "source=imagenet needs weights=<torchvision ResNet-18 ImageNet weights: a local .pth file or an http(s) URL>",
            ),
        ]

    def splits(self, cfg: TrialConfig, data: Cifar10) -> Splits:
        return class_subset_splits(data, TARGET_CLASSES, cfg.per_class, cfg.n_val, cfg.n_test)

    def normalizer(self, cfg: TrialConfig, data: Cifar10, splits: Splits) -> Normalizer:
        if cfg.source == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None] * 255, torch.tensor(IMAGENET_STD)[:, None, None] * 255
            return ChannelAffine(mean, std, tuple(data.train_x.shape[1:]))
        return super().normalizer(cfg, data, source_splits(data, cfg))  # the source's inputs, so its features match

    def model_builder(self, cfg: TrialConfig, data: Cifar10, splits: Splits, norm: Normalizer, device: torch.device):
        """Trains (or loads from the cache) the cifar5 source, or loads the ImageNet weights, first. The global RNG
        is left as it was, so a trial's numbers do not depend on whether its source was cached."""
        if cfg.source == "imagenet":
            state = None if cfg.transfer == "scratch" else load_imagenet_weights(cfg.weights)
            return lambda trial_cfg, shape, gen: target_model(trial_cfg, imagenet_backbone(state), gen)
        if cfg.transfer == "scratch":
            return lambda trial_cfg, shape, gen: target_model(trial_cfg, backbone_of(build_model(trial_cfg, shape, gen)), gen)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            state = cifar5_source(cfg, data, device)

        def make_model(trial_cfg: TrialConfig, shape: tuple[int, ...], gen: torch.Generator) -> nn.Module:
            model = source_model(cfg, shape, torch.Generator())
            model.load_state_dict(state)
            return target_model(trial_cfg, backbone_of(model), gen)

        return make_model

    def finish(self, cfg, td, trial) -> dict[str, Any]:
        if cfg.source != "cifar5" or cfg.transfer == "scratch":
            return {}
        info = source_info(cfg, td.digest) or {}  # how the source was trained: its accuracy, epochs, seconds
        return {f"source.{k}": v for k, v in info.items()}


TASKS.register("transfer", "pretrain on classes 0-4 (or ImageNet), train on classes 5-9: scratch, linear, mlp, finetune")(
    Transfer
)


class Source(Task):
    """The cifar5 source's own task: classes 0-4 (5-way), all their test images; trained once, then cached."""

    name = "source"
    chance = 1 / len(SOURCE_CLASSES)
    packable = False

    def splits(self, cfg: TrialConfig, data: Cifar10) -> Splits:
        return source_splits(data, cfg)

    def model_builder(self, cfg, data, splits, norm, device):
        return source_model


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


def source_key(cfg: TrialConfig, digest: str) -> str:
    """Hash of everything the source depends on: its config fields (SOURCE_FIELDS), the data, the code version, the
    device kind it trains on."""
    src = source_config(cfg)
    fields = {k: v for k, v in as_dict(src).items() if k in SOURCE_FIELDS}
    blob = json.dumps(
        {
            "fields": fields,
            "lr": src.lr,
            "epochs": src.epochs,
            "data": digest,
            "classes": SOURCE_CLASSES,
            "version": SOURCE_VERSION,
            "device": resolve_device(src.device).type,  # a CPU (fp32) and a CUDA (bf16) source differ
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def source_path(cfg: TrialConfig, digest: str) -> Path:
    return cache_dir() / "sources" / f"cifar5-{cfg.model}-{source_key(cfg, digest)}.pt"


def cifar5_source(cfg: TrialConfig, data: Cifar10, device: torch.device) -> dict[str, torch.Tensor]:
    """The trained source's state_dict: from the cache, else trained now and cached.

    A lock file serialises workers that need the same source: one trains, the others wait and load.
    """
    path = source_path(cfg, data.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        saved = _load_source(path)
        if saved is not None:
            return saved["state_dict"]
        state, info = pretrain(source_config(cfg), data, device)
        atomic_save({"state_dict": state, "info": info}, path)
        return state


def pretrain(cfg: TrialConfig, data: Cifar10, device: torch.device) -> tuple[dict, dict]:
    """Train source_model(cfg) on the source classes for cfg.epochs through the one loop (no per-epoch
    evaluation; inputs normalised as the target's: fitted on these source images); (state_dict on the CPU,
    what the record keeps about it)."""
    t0 = time.perf_counter()
    task = Source()
    td = task.prepare(cfg, data, device)
    trial = Trial(cfg, task, td, device)
    fit([trial], "single", graphs_usable(device, cfg.cuda_graphs), progress=False, label="source", measure=False)
    if trial.record["status"] != "ok":
        raise ConfigError(
            f"source pretraining diverged (epoch {trial.record['diverged_epoch']}) at lr={cfg.lr}; set a smaller pretrain_lr"
        )
    test = trial.evaluate(*td.evals["test"])
    info = {
        "test_acc": test["acc"],
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "n_train": len(td.train_x),
        "seconds": time.perf_counter() - t0,
        "device": str(device),
    }
    return {k: v.detach().cpu().clone() for k, v in trial.model.state_dict().items()}, info


def source_info(cfg: TrialConfig, digest: str) -> dict | None:
    """What the cached cifar5 source of `cfg` records about its training (test_acc on classes 0-4,
    seconds, ...), or None when it is not cached."""
    saved = _load_source(source_path(cfg, digest))
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
