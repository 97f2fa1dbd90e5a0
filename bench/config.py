"""One frozen dataclass holds a trial's whole configuration; `key=value` overrides are type-checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from .errors import BenchError


class ConfigError(BenchError, ValueError):
    """A user's config is wrong; the message lists the valid keys or values (the CLI exits 2)."""


@dataclass(frozen=True)
class TrialConfig:
    # --- model -------------------------------------------------------------------------
    model: str = "cnn"  # registry name: linear | mlp | cnn | resnet (see `bench list`)
    depth: int = 0  # 0 = the model's default: mlp 3 hidden layers, cnn 1 conv per stage, resnet 20 (6n+2)
    width: int = 0  # 0 = the model's default: mlp 256 units, cnn 32 channels, resnet 16 channels
    activation: str = "relu"  # registry name; every hidden layer uses it
    init: str = "default"  # registry name; "default" keeps PyTorch's own initialisation
    init_std: float = 0.01  # std for init=normal, and the value for init=constant
    init_dist: str = "normal"  # normal | uniform: distribution of xavier/he/normal (same variance)
    batchnorm: bool = True  # BatchNorm after every conv/linear hidden layer
    dropout: float = 0.0  # drop probability p (mlp: after every hidden activation; cnn/resnet: before the head)
    dropout_mode: str = "inverted"  # inverted (scale by 1/(1-p) in training) | classic (scale by 1-p at test) | unscaled (no rescaling: the mistake)
    residual: bool = True  # resnet only: false gives the plain net of the same depth
    # --- optimisation ------------------------------------------------------------------
    optimizer: str = "momentum"  # registry name
    lr: float = 0.05  # peak learning rate (per step, batch-mean loss)
    momentum: float = 0.9  # for momentum/nesterov; beta1 for adam
    weight_decay: float = 5e-4  # L2 coefficient, applied by the optimizer to every parameter
    schedule: str = "cosine"  # registry name; decays per step over the whole run
    epochs: int = 10  # full passes over the training split
    batch_size: int = 128  # images per step
    seed: int = 0  # initialisation, shuffling, augmentation and dropout randomness
    # --- data --------------------------------------------------------------------------
    n_train: int = 0  # training images, balanced per class; 0 = all 45,000 left after the validation split (task=transfer: source images, classes 0-4; 0 = all 25,000)
    n_val: int = 5000  # validation images carved from train (fixed split, not the trial seed)
    n_test: int = 0  # test images, balanced per class; 0 = all 10,000
    normalization: str = "standardize"  # registry name; fitted on the training split only
    pca_k: int = 0  # components kept by normalization=pca|pca_whiten (mlp only)
    augment: bool = False  # random 4-px-padded crop + horizontal flip, on whole batches
    input_noise: float = 0.0  # std of Gaussian noise added to normalised inputs in training
    test_noise: float = 0.0  # std of Gaussian noise added to normalised inputs at evaluation
    # --- task --------------------------------------------------------------------------
    task: str = (
        "classify"  # classify | transfer (pretrain on a source, train on the target classes) | localize (class + box on a canvas)
    )
    # transfer: the source model is trained once (cached) and reused by every target trial
    source: str = "cifar5"  # cifar5 (pretrained here on CIFAR-10 classes 0-4) | imagenet (torchvision weights from `weights`)
    weights: str = ""  # source=imagenet: a local torchvision ImageNet weights file (.pth) or a URL to download it from
    pretrain_epochs: int = 15  # source=cifar5: epochs of source training (same model and optimiser as the trial)
    transfer: str = (
        "finetune"  # scratch | linear (frozen features + linear head) | mlp (frozen features + MLP head) | finetune (all layers)
    )
    per_class: int = 0  # transfer: target training images per class (classes 5-9); 0 = all that remain after validation
    pretrain_lr: float = 0.0  # source=cifar5: peak lr of source training; 0 = the trial's lr (fix it when the target lr is tuned, so every tuned value reuses one source)
    # localize: each image pasted at a random position and scale onto a larger canvas
    canvas: int = 64  # canvas side in pixels
    background: str = "plain"  # plain (mid-grey) | noise (uniform noise, redrawn per image)
    box_loss: str = (
        "smooth_l1"  # l2 (0.5 d^2) | smooth_l1: regression loss on the (cx, cy, w, h) box, standardised by the training boxes
    )
    box_weight: float = 1.0  # weight of the box loss next to cross-entropy; 0 = classification-only training
    # --- run ---------------------------------------------------------------------------
    device: str = "auto"  # auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    data_dir: str = ""  # "" = $BENCH_DATA_DIR, else ./data with torchvision's download
    probe_size: int = 256  # fixed training images used for per-layer diagnostics each epoch
    eval_train_size: int = 5000  # training images evaluated (eval mode) each epoch for train accuracy


CHOICES: dict[str, tuple[str, ...]] = {
    "init_dist": ("normal", "uniform"),
    "dropout_mode": ("inverted", "classic", "unscaled"),
    "task": ("classify", "transfer", "localize"),
    "source": ("cifar5", "imagenet"),
    "transfer": ("scratch", "linear", "mlp", "finetune"),
    "background": ("plain", "noise"),
    "box_loss": ("l2", "smooth_l1"),
}
FIELDS = {f.name: f for f in fields(TrialConfig)}
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_value(key: str, text: Any) -> Any:
    """Convert `text` to the type of field `key`; raise ConfigError naming the key and expected type."""
    if key not in FIELDS:
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(FIELDS)}")
    kind = type(FIELDS[key].default)
    if not isinstance(text, str):
        if kind is float and isinstance(text, int) and not isinstance(text, bool):
            return float(text)
        if isinstance(text, kind) and not (kind is int and isinstance(text, bool)):
            return text
        raise ConfigError(f"{key} expects {kind.__name__}, got {text!r}")
    try:
        if kind is bool:
            low = text.lower()
            if low not in TRUE + FALSE:
                raise ValueError
            return low in TRUE
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key} expects {kind.__name__}, got {text!r}") from None


def validate(cfg: TrialConfig) -> TrialConfig:
    """Check every registry name and range; raise ConfigError listing the valid values."""
    from .data import NORMALIZATIONS
    from .engine.components import ACTIVATIONS, INITS, OPTIMIZERS, SCHEDULES
    from .engine.models import MODELS

    registries = {
        "model": MODELS,
        "activation": ACTIVATIONS,
        "init": INITS,
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "normalization": NORMALIZATIONS,
    }
    for key, reg in registries.items():
        value = getattr(cfg, key)
        if value not in reg:
            raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(reg.names())}")
    for key, valid in CHOICES.items():
        if getattr(cfg, key) not in valid:
            raise ConfigError(f"unknown {key} {getattr(cfg, key)!r}; valid: {', '.join(valid)}")
    checks = [
        (
            cfg.per_class >= 0 and cfg.pretrain_epochs >= 1 and cfg.pretrain_lr >= 0,
            "per_class must be >= 0 (0 = all), pretrain_epochs >= 1 and pretrain_lr >= 0 (0 = the trial's lr)",
        ),
        (
            cfg.task != "transfer" or cfg.source != "imagenet" or cfg.transfer == "scratch" or bool(cfg.weights),
            "source=imagenet needs weights=<torchvision ResNet-18 ImageNet weights: a local .pth file or an http(s) URL>",
        ),
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.lr > 0, "lr must be > 0"),
        (0.0 <= cfg.dropout < 1.0, "dropout must be in [0, 1)"),
        (cfg.depth >= 0 and cfg.width >= 0, "depth and width must be >= 0 (0 = model default)"),
        (
            cfg.model != "resnet" or cfg.depth == 0 or (cfg.depth - 2) % 6 == 0,
            "resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110)",
        ),
        (
            cfg.normalization not in ("pca", "pca_whiten") or 1 <= cfg.pca_k <= 3072,
            "normalization=pca|pca_whiten needs pca_k in 1..3072",
        ),
        (
            cfg.normalization not in ("pca", "pca_whiten") or cfg.model in ("mlp", "linear"),
            "normalization=pca|pca_whiten gives flat features: use model=mlp or linear",
        ),
        (cfg.input_noise >= 0 and cfg.test_noise >= 0, "input_noise and test_noise must be >= 0"),
        (cfg.canvas >= 32 and cfg.box_weight >= 0, "canvas must be >= 32 (pixels) and box_weight >= 0"),
        (
            cfg.task != "localize" or cfg.model in ("cnn", "resnet"),
            "task=localize needs model=cnn or resnet (a conv trunk for two heads)",
        ),
        (
            cfg.task != "localize" or cfg.normalization not in ("pca", "pca_whiten", "zca"),
            "task=localize needs a per-channel normalization (raw, unit, symmetric, standardize): canvases are large",
        ),
        (
            cfg.task != "localize" or not cfg.augment,
            "task=localize: augment must be false (random placement is its augmentation; a crop or flip would move the box)",
        ),
        (cfg.n_train >= 0 and cfg.n_val >= 10 and cfg.n_test >= 0, "n_train, n_test must be >= 0 and n_val >= 10"),
        (
            cfg.n_train % 10 == 0 and cfg.n_val % 10 == 0 and cfg.n_test % 10 == 0,
            "n_train, n_val and n_test must be multiples of 10 (the splits are class-balanced)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return cfg


def make_config(overrides: dict[str, Any] | None = None, base: TrialConfig | None = None) -> TrialConfig:
    """Build a validated config from `base` (default TrialConfig()) and string or typed overrides."""
    values = {key: parse_value(key, value) for key, value in (overrides or {}).items()}
    return validate(dataclasses.replace(base or TrialConfig(), **values))


def parse_overrides(args: list[str]) -> dict[str, str]:
    """Turn ["lr=0.1", "model=mlp"] into {"lr": "0.1", "model": "mlp"}."""
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {arg!r}; valid keys: {', '.join(FIELDS)}")
        out[key.strip()] = value.strip()
    return out


def as_dict(cfg: TrialConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
