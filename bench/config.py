"""One frozen dataclass holds a trial's whole configuration; `key=value` overrides are type-checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import BenchError


class ConfigError(BenchError, ValueError):
    """A user's config is wrong; the message lists the valid keys or values (the CLI exits 2)."""


def knob(default: Any, *, pack: bool = False, source: bool = True, task: str = "") -> Any:
    """A config field with its roles, read by the engine instead of lists kept by hand.

    pack:   trials that differ only in pack fields can train together (bench.engine.loop.pack_key): these
            fields change the numbers a model is initialised or updated with, not its architecture, data or steps;
    source: the field changes the transfer source network (its cache key, bench/engine/transfer.py);
    task:   the field only means something for this task ("transfer", "localize").
    """
    return field(default=default, metadata={"pack": pack, "source": source, "task": task})


# fmt: off
@dataclass(frozen=True)
class TrialConfig:
    # --- model -------------------------------------------------------------------------
    model: str = knob("cnn")  # registry name: linear | mlp | cnn | resnet (see `bench list`)
    depth: int = knob(0)  # 0 = the model's default: mlp 3 hidden layers, cnn 1 conv per stage, resnet 20 (6n+2)
    width: int = knob(0)  # 0 = the model's default: mlp 256 units, cnn 32 channels, resnet 16 channels
    activation: str = knob("relu")  # registry name; every hidden layer uses it
    init: str = knob("default", pack=True)  # registry name; "default" keeps PyTorch's own initialisation
    init_std: float = knob(0.01, pack=True)  # std for init=normal, and the value for init=constant
    init_dist: str = knob("normal", pack=True)  # normal | uniform: distribution of xavier/he/normal (same variance)
    batchnorm: bool = knob(True)  # BatchNorm after every conv/linear hidden layer
    dropout: float = knob(0.0)  # drop probability p (mlp: after every hidden activation; cnn/resnet: before the head)
    dropout_mode: str = knob("inverted")  # inverted (scale by 1/(1-p) in training) | classic (scale by 1-p at test) | unscaled (no rescaling: the mistake)
    residual: bool = knob(True)  # resnet only: false gives the plain net of the same depth
    # --- optimisation ------------------------------------------------------------------
    optimizer: str = knob("momentum", pack=True)  # registry name
    lr: float = knob(0.05, pack=True, source=False)  # peak learning rate (per step, batch-mean loss)
    momentum: float = knob(0.9, pack=True)  # for momentum/nesterov; beta1 for adam
    weight_decay: float = knob(5e-4, pack=True)  # L2 coefficient, applied by the optimizer to every parameter
    schedule: str = knob("cosine", pack=True)  # registry name; decays per step over the whole run
    epochs: int = knob(10, source=False)  # full passes over the training split
    batch_size: int = knob(128)  # images per step
    seed: int = knob(0, pack=True)  # initialisation, shuffling, augmentation and dropout randomness
    # --- data --------------------------------------------------------------------------
    n_train: int = knob(0)  # training images, balanced per class; 0 = all 45,000 left after the validation split (task=transfer: source images, classes 0-4; 0 = all 25,000)
    n_val: int = knob(5000, source=False)  # validation images carved from train (fixed split, not the trial seed)
    n_test: int = knob(0, source=False)  # test images, balanced per class; 0 = all 10,000
    normalization: str = knob("standardize")  # registry name; fitted on the training split only
    pca_k: int = knob(0)  # components kept by normalization=pca|pca_whiten (mlp only)
    augment: bool = knob(False, pack=True)  # random 4-px-padded crop + horizontal flip, on whole batches
    input_noise: float = knob(0.0, pack=True)  # std of Gaussian noise added to normalised inputs in training
    test_noise: float = knob(0.0, pack=True, source=False)  # std of Gaussian noise added to normalised inputs at evaluation
    # --- task --------------------------------------------------------------------------
    task: str = knob("classify", source=False)  # classify | transfer (pretrain on a source, train on the target classes) | localize (class + box on a canvas)
    # transfer: the source model is trained once (cached) and reused by every target trial
    source: str = knob("cifar5", task="transfer")  # cifar5 (pretrained here on CIFAR-10 classes 0-4) | imagenet (torchvision weights from `weights`)
    weights: str = knob("", source=False, task="transfer")  # source=imagenet: a local torchvision ImageNet weights file (.pth) or a URL to download it from
    pretrain_epochs: int = knob(15, task="transfer")  # source=cifar5: epochs of source training (same model and optimiser as the trial)
    transfer: str = knob("finetune", source=False, task="transfer")  # scratch | linear (frozen features + linear head) | mlp (frozen features + MLP head) | finetune (all layers)
    per_class: int = knob(0, source=False, task="transfer")  # target training images per class (classes 5-9); 0 = all that remain after validation
    pretrain_lr: float = knob(0.0, source=False, task="transfer")  # source=cifar5: peak lr of source training; 0 = the trial's lr (fix it when the target lr is tuned, so every tuned value reuses one source)
    # localize: each image pasted at a random position and scale onto a larger canvas
    canvas: int = knob(64, source=False, task="localize")  # canvas side in pixels
    background: str = knob("plain", source=False, task="localize")  # plain (mid-grey) | noise (uniform noise, redrawn per image)
    box_loss: str = knob("smooth_l1", source=False, task="localize")  # l2 (0.5 d^2) | smooth_l1: regression loss on the (cx, cy, w, h) box, standardised by the training boxes
    box_weight: float = knob(1.0, source=False, task="localize")  # weight of the box loss next to cross-entropy; 0 = classification-only training
    # --- run ---------------------------------------------------------------------------
    device: str = knob("auto", source=False)  # auto (cuda if present, else cpu) | cpu | cuda | cuda:N
    cuda_graphs: bool = knob(True, source=False)  # on CUDA, capture the training step once and replay it (false: eager steps; ignored on the CPU)
    data_dir: str = knob("", source=False)  # "" = $BENCH_DATA_DIR, else ./data with torchvision's download
    probe_size: int = knob(256, source=False)  # fixed training images used for per-layer diagnostics each epoch
    eval_train_size: int = knob(5000, source=False)  # training images evaluated (eval mode) each epoch for train accuracy
# fmt: on


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


def with_role(role: str, value: Any = True) -> frozenset[str]:
    """Names of the fields whose metadata has `role` equal to `value` (see `knob`)."""
    return frozenset(name for name, f in FIELDS.items() if f.metadata.get(role) == value)


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


def field_rules(cfg: TrialConfig) -> list[tuple[bool, str]]:
    """Rules on fields alone, whatever the task: (holds, message when it does not)."""
    return [
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.lr > 0, "lr must be > 0"),
        (0.0 <= cfg.dropout < 1.0, "dropout must be in [0, 1)"),
        (cfg.depth >= 0 and cfg.width >= 0, "depth and width must be >= 0 (0 = model default)"),
        (cfg.input_noise >= 0 and cfg.test_noise >= 0, "input_noise and test_noise must be >= 0"),
        (cfg.n_train >= 0 and cfg.n_val >= 10 and cfg.n_test >= 0, "n_train, n_test must be >= 0 and n_val >= 10"),
        (
            cfg.n_train % 10 == 0 and cfg.n_val % 10 == 0 and cfg.n_test % 10 == 0,
            "n_train, n_val and n_test must be multiples of 10 (the splits are class-balanced)",
        ),
        (cfg.probe_size >= 2 and cfg.eval_train_size >= 1, "probe_size must be >= 2 and eval_train_size >= 1"),
    ]


def check_fields(cfg: TrialConfig) -> TrialConfig:
    """Check the fixed choices and the field rules; the registry names and the task's own rules are checked by
    the engine (bench.engine.rules.check, which calls this first), so this module stays a leaf."""
    for key, valid in CHOICES.items():
        if getattr(cfg, key) not in valid:
            raise ConfigError(f"unknown {key} {getattr(cfg, key)!r}; valid: {', '.join(valid)}")
    for ok, message in field_rules(cfg):
        if not ok:
            raise ConfigError(message)
    return cfg


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
