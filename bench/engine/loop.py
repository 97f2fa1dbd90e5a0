"""One trial: train cfg.model on CIFAR-10 for cfg.epochs and return one flat record.

Nothing global: logging goes through the `logger` passed in (anything with
`log_epoch(epoch, metrics)`), so a trial runs the same with or without MLflow.
"""

from __future__ import annotations

import math
import platform
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from bench.config import ConfigError, TrialConfig, as_dict
from bench.data import Cifar10, augment, fit_normalizer, iterate_batches, load_cifar10, make_splits

from . import diagnostics as diag
from .components import OPTIMIZERS, SCHEDULES
from .models import build_model

EVAL_BATCH = {"cpu": 128, "cuda": 1024}  # images per evaluation pass: small batches stay in CPU cache


class EpochLogger(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but CUDA is not available; use device=cpu or device=auto")
    return device


def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def autocast_for(device: torch.device):
    """A context-manager factory: bf16 autocast on CUDA, nothing elsewhere."""
    return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext


def provenance(cfg: TrialConfig, device: torch.device, data: Cifar10, history: dict[str, list]) -> dict[str, Any]:
    """The record keys every trial kind shares: where and with what it ran, its config and its history."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": f"{device} ({name})",
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "data_source": data.source,
        "data_digest": data.digest,
        **{f"config.{k}": v for k, v in as_dict(cfg).items()},
        **{f"history.{k}": v for k, v in history.items()},
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, prep, noise: float, generator: torch.Generator, amp
) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) in eval mode over all of x."""
    model.eval()
    loss_sum, correct = 0.0, 0
    size = EVAL_BATCH.get(x.device.type, 256)
    for start in range(0, len(x), size):
        xb = prep(x[start : start + size])
        if noise:
            xb = xb + noise * torch.randn(xb.shape, generator=generator).to(xb.device)
        with amp():
            logits = model(xb).float()
        yb = y[start : start + size]
        loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train()
    return loss_sum / len(x), correct / len(x)


class Trial:
    """Everything one trial owns: its data on the device, model, optimiser, schedule, random
    generators and history. `train_trial` drives one; `train_packed` drives several through one
    batched forward/backward, each keeping its own optimiser, learning rate and randomness."""

    def __init__(self, cfg: TrialConfig, logger: EpochLogger | None, data: Cifar10, device: torch.device):
        self.cfg, self.logger, self.device, self.data = cfg, logger, device, data
        self.wall0 = time.perf_counter()
        torch.manual_seed(cfg.seed)  # PyTorch's default init and dropout masks draw from the global RNG
        self.gen = torch.Generator().manual_seed(cfg.seed)  # our inits, shuffling, augmentation, noise
        if cfg.task == "transfer":  # target classes only, a normaliser and a model built from the source
            from .transfer import setup_transfer

            splits, norm, make_model = setup_transfer(cfg, data, device)
        else:
            splits = make_splits(data, cfg.n_train, cfg.n_val, cfg.n_test)
            norm = fit_normalizer(cfg.normalization, splits.train_x, cfg.pca_k)
            make_model = lambda shape, generator: build_model(cfg, shape, generator)  # noqa: E731
        self.on_cuda = device.type == "cuda"
        self.amp = autocast_for(device)
        if self.on_cuda:
            torch.backends.cudnn.benchmark = True
        self.norm = norm.to(device)
        self.tx, self.ty = splits.train_x.to(device), splits.train_y.to(device)
        self.vx, self.vy = splits.val_x.to(device), splits.val_y.to(device)
        self.sx, self.sy = splits.test_x.to(device), splits.test_y.to(device)
        # channels_last for images on every device: cuDNN's and oneDNN's fast convolutions use it, and
        # on the CPU the grouped convolutions of packed trials are many times slower without it
        self.fmt = torch.channels_last if len(self.norm.out_shape) == 3 else torch.contiguous_format
        # Fixed random subsets (the same for every trial on these data; the split is sorted by
        # class, so a plain slice would hold one or two classes only).
        subset = torch.randperm(len(self.tx), generator=torch.Generator().manual_seed(0)).to(device)
        self.ex, self.ey = self.tx[subset[: cfg.eval_train_size]], self.ty[subset[: cfg.eval_train_size]]  # train accuracy
        self.px, self.py = self.prep(self.tx[subset[: cfg.probe_size]]), self.ty[subset[: cfg.probe_size]]  # probe batch

        self.model = make_model(self.norm.out_shape, self.gen).to(device, memory_format=self.fmt)
        self.optimizer = OPTIMIZERS.get(cfg.optimizer)([p for p in self.model.parameters() if p.requires_grad], cfg)
        self.steps_per_epoch = math.ceil(len(self.tx) / cfg.batch_size)
        self.lr_at = SCHEDULES.get(cfg.schedule)(self.steps_per_epoch * cfg.epochs)
        self.eval_gen = torch.Generator()
        self.history: dict[str, list] = {}
        self.record: dict[str, Any] = {"status": "ok", "diverged_epoch": None}
        self.step_count, self.train_seconds, self.epochs_run = 0, 0.0, 0
        self.epoch_loss = torch.zeros((), device=device)
        self.ratios: dict[str, float] = {}
        self._before: dict | None = None
        self.done = False  # finished all epochs or diverged

    def prep(self, xb: torch.Tensor) -> torch.Tensor:
        return self.norm(xb).contiguous(memory_format=self.fmt)

    # ------------------------------------------------------------------ one training step
    def batches(self) -> list[torch.Tensor]:
        """This epoch's shuffled index batches (drawn from the trial's generator)."""
        self.epoch_loss = torch.zeros((), device=self.device)
        self.ratios = {}
        return list(iterate_batches(len(self.tx), self.cfg.batch_size, self.gen))

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of one step: gathered on the device, augmented, normalised, noised;
        also sets this step's learning rate."""
        idx = idx.to(self.device)
        xb = self.tx[idx]
        if self.cfg.augment:
            xb = augment(xb, self.gen)
        xb = self.prep(xb)
        if self.cfg.input_noise:
            xb = xb + self.cfg.input_noise * torch.randn(xb.shape, generator=self.gen).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * self.lr_at(self.step_count)
        return xb, self.ty[idx]

    def step(self, i: int, loss: torch.Tensor, n: int) -> bool:
        """Apply the optimiser after backward; False when the running loss is no longer finite."""
        before = diag.snapshot(self.model) if i == 0 else None
        self.optimizer.step()
        if before is not None:
            self.ratios = diag.update_ratios(self.model, before)
        self.epoch_loss += loss.detach() * n
        self.step_count += 1
        return not (i % 20 == 0 and not torch.isfinite(self.epoch_loss))  # syncs the device only every 20 steps

    # ------------------------------------------------------------------ per-epoch measurement
    def log(self, epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if self.logger is not None:
            self.logger.log_epoch(
                epoch, {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )

    def measure(self, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        self.eval_gen.manual_seed(cfg.seed + 1)  # the same test noise every epoch
        metrics = dict(extra)
        for split, (x, y) in {"train": (self.ex, self.ey), "val": (self.vx, self.vy), "test": (self.sx, self.sy)}.items():
            metrics[f"{split}_loss"], metrics[f"{split}_acc"] = evaluate(
                self.model, x, y, self.prep, cfg.test_noise, self.eval_gen, self.amp
            )
        probe = diag.probe(self.model, self.px, self.py, histograms=epoch in (0, cfg.epochs))
        hist = {k: probe.pop(k) for k in list(probe) if ".hist_" in k}
        self.record.update({f"{'init' if epoch == 0 else 'final'}.{k}": v for k, v in hist.items()})
        metrics.update(probe)
        metrics.update(diag.effective_lr(self.model, self.optimizer, cfg.lr * self.lr_at(epoch * self.steps_per_epoch)))
        return metrics

    def start(self) -> None:
        self.log(0, self.measure(0, {"epoch": 0, "seconds": 0.0, "lr": self.cfg.lr * self.lr_at(0)}))
        self.model.train()

    def end_epoch(self, epoch: int, seconds: float, diverged: bool) -> dict[str, Any] | None:
        """Book the epoch's training time, then measure and log; None when the trial diverged."""
        self.train_seconds += seconds
        self.epochs_run = epoch
        train_loss = float(self.epoch_loss) / len(self.tx)
        if diverged or not math.isfinite(train_loss):
            self.record.update(status="diverged", diverged_epoch=epoch)
            self.done = True
            return None
        metrics = self.measure(
            epoch,
            {
                "epoch": epoch,
                "seconds": self.train_seconds,
                "lr": self.cfg.lr * self.lr_at(self.step_count),
                "train_loss_running": train_loss,
                **self.ratios,
            },
        )
        self.log(epoch, metrics)
        if not math.isfinite(metrics["val_loss"]):
            self.record.update(status="diverged", diverged_epoch=epoch)
            self.done = True
        elif epoch == self.cfg.epochs:
            self.done = True
        return metrics

    def finish(self) -> dict[str, Any]:
        cfg, model, record, history = self.cfg, self.model, self.record, self.history
        if record["status"] == "ok":
            record.update(diag.distinct_units(model))
            record["collapse_err"] = diag.linear_collapse_error(model, self.px)
            record.update(diag.accumulated_vs_step(model, self.optimizer, cfg.lr))
        if cfg.task == "transfer" and cfg.source == "cifar5" and cfg.transfer != "scratch":
            from .transfer import source_info  # how the source was trained: its accuracy, epochs, seconds

            record.update({f"source.{k}": v for k, v in (source_info(cfg, self.data) or {}).items()})
        last = {k: v[-1] for k, v in history.items()}
        finals = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
        record.update({k: (last[k] if record["status"] == "ok" else None) for k in finals})  # None: JSON has no NaN
        record.update(
            {
                "epochs_run": self.epochs_run,
                "best_val_acc": max(history["val_acc"]),
                "seconds": time.perf_counter() - self.wall0,
                "train_seconds": self.train_seconds,
                "images_per_s": len(self.tx) * self.epochs_run / max(self.train_seconds, 1e-9),
                "n_params": sum(p.numel() for p in model.parameters()),
                "n_train_used": len(self.tx),
                "n_val_used": len(self.vx),
                "n_test_used": len(self.sx),
                **provenance(cfg, self.device, self.data, history),
            }
        )
        return record


def train_trial(
    cfg: TrialConfig, logger: EpochLogger | None = None, progress: bool = True, data: Cifar10 | None = None, compile: bool = False
) -> dict[str, Any]:
    """Train one trial and return its flat, JSON-serialisable record (see README for keys).

    A NaN/Inf loss ends the trial early with status "diverged": a diverged arm is a result.
    `data` may be passed in to reuse already-loaded data across trials. `compile`: train through
    torch.compile(model) (evaluation and diagnostics use the eager model; the first epoch's
    seconds include the compilation).
    """
    if cfg.task == "localize":  # its own loop: two heads, two losses, box metrics
        from .localize import train_localization

        return train_localization(cfg, logger, progress, data)
    device = resolve_device(cfg.device)  # a bad device fails before the data are read
    trial = Trial(cfg, logger, data if data is not None else load_cifar10(cfg.data_dir or None), device)
    model, amp = trial.model, trial.amp
    forward = torch.compile(model) if compile else model
    trial.start()
    bar = tqdm(
        total=trial.steps_per_epoch * cfg.epochs,
        desc=f"{cfg.model} {cfg.activation} {cfg.optimizer} seed={cfg.seed}",
        disable=not progress,
        leave=False,
        unit="step",
        dynamic_ncols=True,
    )
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        diverged = False
        for i, idx in enumerate(trial.batches()):
            xb, yb = trial.batch(idx)
            with amp():
                loss = nn.functional.cross_entropy(forward(xb).float(), yb)
            trial.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not trial.step(i, loss, len(idx)):
                diverged = True
                break
            bar.update(1)
        if trial.on_cuda:
            torch.cuda.synchronize(trial.device)  # the epoch's queued steps belong to its seconds
        metrics = trial.end_epoch(epoch, time.perf_counter() - t0, diverged)
        if metrics is not None:
            bar.set_postfix(val_acc=f"{metrics['val_acc']:.3f}")
        if trial.done:
            break
    bar.close()
    return trial.finish()


# ---------------------------------------------------------------------- packed trials
# Fields that may differ between trials trained together: they change the numbers a model is
# initialised or updated with, not its architecture, its data or its step count.
PACKABLE = frozenset(
    {
        "seed",
        "lr",
        "optimizer",
        "momentum",
        "weight_decay",
        "schedule",
        "init",
        "init_std",
        "init_dist",
        "augment",
        "input_noise",
        "test_noise",
    }
)


def pack_key(cfg: TrialConfig) -> tuple | None:
    """Trials with equal keys can train packed; None: this trial always trains alone."""
    if cfg.task != "classify":
        return None
    return tuple(sorted((k, v) for k, v in as_dict(cfg).items() if k not in PACKABLE))


class _Pack:
    """Stacked views of the packed models' parameters and buffers for one vmap'd forward.

    Parameters are stacked at every forward (torch.stack is differentiable, so each model's own
    parameters receive exactly their own gradient); buffers (BatchNorm running statistics) live in
    one stacked tensor per name, and each model's buffer is a view of its slice, so the in-place
    running-average update inside the vmap'd forward lands in every model.
    """

    def __init__(self, models: list[nn.Module]):
        from torch.func import functional_call, vmap

        self.models, self.base = models, models[0]
        self.param_names = [n for n, _ in self.base.named_parameters()]
        self.buffers: dict[str, torch.Tensor] = {}
        for name, _ in self.base.named_buffers():
            stacked = torch.stack([m.get_buffer(name) for m in models])
            self.buffers[name] = stacked
            owner, _, leaf = name.rpartition(".")
            for i, m in enumerate(models):
                (m.get_submodule(owner) if owner else m)._buffers[leaf] = stacked[i]

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self.forward_all = vmap(one, in_dims=(0, 0, 0), randomness="different")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (k, B, ...) -> logits (k, B, classes); model i sees x[i]."""
        params = {n: torch.stack([m.get_parameter(n) for m in self.models]) for n in self.param_names}
        return self.forward_all(params, self.buffers, x)

    def release(self) -> None:
        """Give every model its own copy of its buffers again (before the pack changes)."""
        for name in self.buffers:
            owner, _, leaf = name.rpartition(".")
            for m in self.models:
                mod = m.get_submodule(owner) if owner else m
                mod._buffers[leaf] = mod._buffers[leaf].clone()


def train_packed(
    cfgs: list[TrialConfig], loggers: list[EpochLogger | None] | None = None, progress: bool = True, data: Cifar10 | None = None
) -> list[dict[str, Any]]:
    """Train trials of one architecture together (see PACKABLE for what may differ) and return
    their records in order.

    One vmap'd forward/backward serves all of them; each keeps its own optimiser, learning-rate
    schedule, shuffling, augmentation and initialisation, so a packed trial follows the same
    curve as the same trial trained alone (up to floating-point reassociation). Dropout masks
    come from the global RNG and differ from a lone run's. A trial that diverges leaves the pack;
    the others go on. Per-epoch evaluation and diagnostics run per trial.
    """
    if not cfgs:
        return []
    keys = {pack_key(c) for c in cfgs}
    if None in keys or len(keys) > 1:
        raise ValueError("packed trials must share every config field except " + ", ".join(sorted(PACKABLE)))
    loggers = loggers or [None] * len(cfgs)
    if len(cfgs) == 1:  # nothing to stack: the plain loop
        return [train_trial(cfgs[0], loggers[0], progress, data)]
    device = resolve_device(cfgs[0].device)
    data = data if data is not None else load_cifar10(cfgs[0].data_dir or None)
    trials = [Trial(c, lg, data, device) for c, lg in zip(cfgs, loggers)]
    for t in trials:
        t.start()
    cfg, amp = cfgs[0], trials[0].amp
    bar = tqdm(
        total=trials[0].steps_per_epoch * cfg.epochs,
        desc=f"{cfg.model} x{len(trials)} packed",
        disable=not progress,
        leave=False,
        unit="step",
        dynamic_ncols=True,
    )
    active = list(trials)
    for epoch in range(1, cfg.epochs + 1):
        pack = _Pack([t.model for t in active])
        t0 = time.perf_counter()
        order = [t.batches() for t in active]
        failed: set[int] = set()
        for i in range(len(order[0])):
            xs, ys = zip(*(t.batch(o[i]) for t, o in zip(active, order)))
            with amp():
                logits = pack(torch.stack(xs)).float()  # stack keeps channels_last
            losses = torch.stack([nn.functional.cross_entropy(lg, y) for lg, y in zip(logits, ys)])
            for t in active:
                t.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # trial j's parameters get d loss_j only: the trials share nothing
            for j, t in enumerate(active):
                if j not in failed and not t.step(i, losses[j], len(ys[j])):
                    failed.add(j)
            bar.update(1)
            if len(failed) == len(active):
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        pack.release()
        for j, t in enumerate(active):
            t.end_epoch(epoch, seconds, j in failed)  # each trial is charged the pack's wall time
        active = [t for t in active if not t.done]
        if not active:
            break
    bar.close()
    records = [t.finish() for t in trials]
    for r in records:
        r["packed"] = len(trials)
    return records
