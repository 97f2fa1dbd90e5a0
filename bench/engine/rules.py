"""Validated configs: `make_config` builds a TrialConfig from key=value overrides and checks it here, where the
registries are (every registry name, and the rules of the config's own task, each task stating its own in
`Task.rules`); bench/config.py, the leaf, checks the fields alone."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.config import ConfigError, TrialConfig, check_fields, parse_value
from bench.data import NORMALIZATIONS

from . import localize, transfer  # noqa: F401  (register their tasks)
from .activations import ACTIVATIONS
from .inits import INITS
from .models import MODELS
from .optim import OPTIMIZERS, SCHEDULES
from .task import TASKS

REGISTRIES = {
    "model": MODELS,
    "activation": ACTIVATIONS,
    "init": INITS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "normalization": NORMALIZATIONS,
    "task": TASKS,
}


def model_rules(cfg: TrialConfig) -> list[tuple[bool, str]]:
    """Rules between the model and its inputs, whatever the task."""
    flat = cfg.normalization in ("pca", "pca_whiten")
    return [
        (
            cfg.model != "resnet" or cfg.depth == 0 or (cfg.depth - 2) % 6 == 0,
            "resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110)",
        ),
        (not flat or 1 <= cfg.pca_k <= 3072, "normalization=pca|pca_whiten needs pca_k in 1..3072"),
        (not flat or cfg.model in ("mlp", "linear"), "normalization=pca|pca_whiten gives flat features: use model=mlp or linear"),
    ]


def check(cfg: TrialConfig) -> TrialConfig:
    """Raise ConfigError (one line, listing the valid values) for an unknown name or a broken rule."""
    check_fields(cfg)
    for key, reg in REGISTRIES.items():
        value = getattr(cfg, key)
        if value not in reg:
            raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(reg.names())}")
    for ok, message in model_rules(cfg) + TASKS.get(cfg.task)().rules(cfg):
        if not ok:
            raise ConfigError(message)
    return cfg


def make_config(overrides: dict[str, Any] | None = None, base: TrialConfig | None = None) -> TrialConfig:
    """Build a validated config from `base` (default TrialConfig()) and string or typed overrides."""
    values = {key: parse_value(key, value) for key, value in (overrides or {}).items()}
    return check(dataclasses.replace(base or TrialConfig(), **values))
