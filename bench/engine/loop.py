"""Training entry points: one trial (`train_trial`) or several trained together (`train_packed`), any task;
they build the task's data and the trials and train them through the one loop (fit.py).

Nothing global: logging goes through the `logger` passed in (anything with `log_epoch(epoch, metrics)`), so a
trial runs the same with or without MLflow.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.config import TrialConfig, as_dict, with_role
from bench.data import Cifar10, load_cifar10

from . import localize, transfer  # noqa: F401  (their tasks register themselves)
from .device import resolve_device
from .fit import fit
from .graph import graphs_usable
from .task import TASKS, Task
from .trial import EpochLogger, Trial

# Fields that may differ between trials trained together, from TrialConfig's metadata (bench/config.py `knob`).
PACKABLE = with_role("pack")
PACK_MODES = ("vmap", "streams")  # one fused model / one graph per trial replayed side by side on its own CUDA stream


def default_mode(device_type: str) -> str:
    """How packed trials train together unless told: "streams" on CUDA (each trial its own CUDA graph, replayed
    side by side on its own stream: its lone curve, up to cuDNN's choice of algorithms), "vmap" on the CPU (one fused model; `bench speed`
    measures both)."""
    return "streams" if device_type == "cuda" else "vmap"


def task_of(cfg: TrialConfig) -> Task:
    return TASKS.get(cfg.task)()


def pack_key(cfg: TrialConfig) -> tuple | None:
    """Trials with equal keys can train packed; None: this trial always trains alone."""
    if not task_of(cfg).packable:
        return None
    return tuple(sorted((k, v) for k, v in as_dict(cfg).items() if k not in PACKABLE))


def train_trial(
    cfg: TrialConfig, logger: EpochLogger | None = None, progress: bool = True, data: Cifar10 | None = None
) -> dict[str, Any]:
    """Train one trial and return its flat, JSON-serialisable record (see docs/record.md for keys).

    A NaN/Inf loss ends the trial early with status "diverged": a diverged arm is a result. `data` may be
    passed in to reuse already-loaded data across trials.
    """
    return train_packed([cfg], [logger], progress, data)[0]


def train_packed(
    cfgs: list[TrialConfig],
    loggers: list[EpochLogger | None] | None = None,
    progress: bool = True,
    data: Cifar10 | None = None,
    mode: str | None = None,
) -> list[dict[str, Any]]:
    """Train trials that share a pack_key together (one trial: alone) and return their records in order.

    Each keeps its own optimiser, learning-rate schedule, shuffling, augmentation, noise and initialisation. mode
    (k > 1): "vmap" fuses them into one model (one forward/backward; dropout masks then come from the global RNG);
    "streams" steps each on its own (on CUDA its graph replays on its own stream, so the trials run side by side
    and each follows its lone curve: bit for bit on the CPU, up to cuDNN's choice of algorithms on CUDA). Default:
    `default_mode` for the device. A trial that diverges leaves; the others go on. Per-epoch evaluation and
    diagnostics run per trial.
    """
    if not cfgs:
        return []
    keys = {pack_key(c) for c in cfgs}
    if len(cfgs) > 1 and (None in keys or len(keys) > 1):
        raise ValueError("packed trials must share every config field except " + ", ".join(sorted(PACKABLE)))
    loggers = loggers or [None] * len(cfgs)
    device = resolve_device(cfgs[0].device)  # a bad device fails before the data are read
    data = data if data is not None else load_cifar10(cfgs[0].data_dir or None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    task = task_of(cfgs[0])
    td = task.prepare(cfgs[0], data, device)  # the pack shares its data on the device
    trials = [Trial(c, task, td, device, lg) for c, lg in zip(cfgs, loggers)]
    mode = mode or default_mode(device.type)
    if mode not in PACK_MODES:
        raise ValueError(f"unknown pack mode {mode!r}; valid: {', '.join(PACK_MODES)}")
    mode = mode if len(trials) > 1 else "single"
    graphs = graphs_usable(device, cfgs[0].cuda_graphs)
    cfg = cfgs[0]
    label = (
        f"{cfg.model} {cfg.activation} {cfg.optimizer} seed={cfg.seed}"
        if len(trials) == 1
        else f"{cfg.model} x{len(trials)} {mode}"
    )
    how = fit(trials, mode, graphs, progress, label)
    records = [t.finish(how) for t in trials]
    if len(trials) > 1:
        for r in records:
            r["packed"] = len(trials)
    return records
