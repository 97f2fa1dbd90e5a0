"""One trial's state and its training step, written so the step can be captured as a CUDA graph: the epoch's
order, the step counters, the learning rate and every random draw live on the device, so a step never waits
for the host; the loop (loop.py) drives trials, per-epoch measurement is here."""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import torch

from bench.config import TrialConfig

from . import diagnostics as diag
from .device import autocast_for, provenance
from .models import Dropout
from .optim import OPTIMIZERS, lr_table
from .task import Task, TaskData, take

EVAL_BATCH = {"cpu": 128, "cuda": 1024}  # images per evaluation pass: small batches stay in CPU cache
DIVERGENCE_CHECK_STEPS = 20  # on the CPU, look at the running loss every this many steps (free there); on CUDA once per epoch


class EpochLogger(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


class Trial:
    """Everything one trial owns: its model, optimiser, learning-rate table, generators, counters and history;
    the task's data (`td`) is shared with the other trials of its pack."""

    def __init__(self, cfg: TrialConfig, task: Task, td: TaskData, device: torch.device, logger: EpochLogger | None = None):
        self.cfg, self.task, self.td, self.device, self.logger = cfg, task, td, device, logger
        self.wall0 = time.perf_counter()
        torch.manual_seed(cfg.seed)  # PyTorch's default initialisation draws from the global RNG
        init_gen = torch.Generator().manual_seed(cfg.seed)  # our initialisations (the model is built on the CPU)
        # Shuffling, augmentation, input noise and dropout masks: the trial's own generator, on its device.
        self.gen = torch.Generator(device=device).manual_seed(cfg.seed)
        self.eval_gen = torch.Generator(device=device)  # test noise, re-seeded each epoch: the same noise every epoch
        self.amp = autocast_for(device)
        self.model = td.make_model(cfg, td.norm.out_shape, init_gen).to(device, memory_format=td.fmt)
        for m in self.model.modules():
            if isinstance(m, Dropout):
                m.generator = self.gen
        self.optimizer = OPTIMIZERS.get(cfg.optimizer)(self.model.parameters(), cfg)
        n = len(td.train_x)
        self.full_steps, self.rest = divmod(n, cfg.batch_size)  # whole batches per epoch, images in the last partial one
        self.steps_per_epoch = self.full_steps + (self.rest > 0)
        self.lr = lr_table(cfg.schedule, cfg.lr, self.steps_per_epoch * cfg.epochs, device)
        # Static buffers the step reads and writes in place (a captured graph keeps their addresses).
        self.order = torch.empty(n, dtype=torch.long, device=device)
        self.pos = torch.zeros(1, dtype=torch.long, device=device)  # whole batches taken this epoch
        self.count = torch.zeros(1, dtype=torch.long, device=device)  # steps taken in all
        self.sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=device)}  # running sums over the epoch
        self.history: dict[str, list] = {}
        self.record: dict[str, Any] = {"status": "ok", "diverged_epoch": None, "chance": task.chance}
        self.train_seconds, self.epochs_run = 0.0, 0
        self.ratios: dict[str, torch.Tensor] = {}
        self.done = False  # finished all epochs or diverged

    def rebind(self, fresh: dict[torch.Generator, torch.Generator]) -> None:
        """Draw from the generator `fresh` maps this trial's to (a failed graph capture replaced it)."""
        new = fresh.get(self.gen, self.gen)
        for m in self.model.modules():
            if isinstance(m, Dropout) and m.generator is self.gen:
                m.generator = new
        self.gen = new

    # ------------------------------------------------------------------ the step
    def begin_epoch(self) -> None:
        """This epoch's order (the trial's generator, on its device) into the static buffer; counters and sums."""
        self.order.copy_(torch.randperm(len(self.order), generator=self.gen, device=self.device))
        self.pos.zero_()
        for s in self.sums.values():
            s.zero_()

    def step(self) -> None:
        """One whole batch at position `pos` of the epoch's order. Reads nothing back to the host."""
        idx = self.order[: self.full_steps * self.cfg.batch_size].view(self.full_steps, -1).index_select(0, self.pos).view(-1)
        self._train_on(idx)
        self.pos.add_(1)

    def partial_step(self) -> None:
        """The epoch's last, smaller batch (run eagerly when the whole batches are replayed from a graph)."""
        self._train_on(self.order[self.full_steps * self.cfg.batch_size :])

    def _train_on(self, idx: torch.Tensor) -> None:
        cfg = self.cfg
        x, targets = self.task.train_batch(cfg, self.td, idx, self.gen)
        if cfg.input_noise:
            x = x + cfg.input_noise * torch.randn(x.shape, generator=self.gen, device=self.device)
        self.optimizer.lr.copy_(self.lr.index_select(0, self.count).view(()))
        with self.amp():
            out = self.model(x)
        loss, parts = self.task.loss(cfg, self.td, out, targets)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        n = len(idx)
        self.sums["loss"].add_(loss.detach() * n)
        for key, value in parts.items():
            self.sums.setdefault(key, torch.zeros((), device=self.device)).add_(value.detach() * n)
        self.count.add_(1)

    def running_loss_finite(self) -> bool:
        """Reads the running loss on the host (a device sync on CUDA)."""
        return bool(torch.isfinite(self.sums["loss"]))

    # ------------------------------------------------------------------ per-epoch measurement
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, targets) -> dict[str, float]:
        """Per-image means of the task's evaluation sums over all of x, in eval mode; one read of the device."""
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        size = EVAL_BATCH.get(x.device.type, 256)
        for start in range(0, len(x), size):
            xb = self.td.prep(x[start : start + size])
            if self.cfg.test_noise:
                xb = xb + self.cfg.test_noise * torch.randn(xb.shape, generator=self.eval_gen, device=self.device)
            with self.amp():
                out = self.model(xb)
            for key, value in self.task.eval_sums(self.cfg, self.td, out, take(targets, slice(start, start + size))).items():
                sums[key] = sums[key] + value if key in sums else value
        self.model.train()
        values = torch.stack(list(sums.values())).double().cpu().tolist()
        out = {("acc" if key == "correct" else key): v / len(x) for key, v in zip(sums, values)}
        return out

    def measure(self, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        self.eval_gen.manual_seed(cfg.seed + 1)  # the same test noise every epoch
        metrics = dict(extra)
        for split, (x, targets) in self.td.evals.items():
            metrics.update({f"{split}_{k}": v for k, v in self.evaluate(x, targets).items()})
        px, py = self.td.probe
        probe = diag.probe(self.task.probe_model(self.model), px, py, histograms=epoch in (0, cfg.epochs), seed=cfg.seed + 2)
        hist = {k: probe.pop(k) for k in list(probe) if ".hist_" in k}
        self.record.update({f"{'init' if epoch == 0 else 'final'}.{k}": v for k, v in hist.items()})
        metrics.update(probe)
        metrics.update(diag.effective_lr(self.model, self.optimizer, float(self.lr[epoch * self.steps_per_epoch])))
        return metrics

    def log(self, epoch: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if self.logger is not None:
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.logger.log_epoch(epoch, numbers)

    def start(self) -> None:
        self.log(0, self.measure(0, {"epoch": 0, "seconds": 0.0, "lr": float(self.lr[0])}))
        self.model.train()

    def snapshot_then(self, run_step) -> None:
        """Run the epoch's first step with the weights saved before it: the update/weight ratios of that step."""
        before = diag.snapshot(self.model)
        run_step()
        self.ratios = diag.update_ratios(self.model, before)

    def end_training_epoch(self, epoch: int, seconds: float, diverged: bool = False) -> None:
        """An epoch without measurement (a transfer source's pretraining): only the running loss is kept."""
        self.train_seconds += seconds
        self.epochs_run = epoch
        loss = float(self.sums["loss"]) / len(self.td.train_x)
        if diverged or not math.isfinite(loss):
            self.record.update(status="diverged", diverged_epoch=epoch)
            self.done = True
            return
        self.history.setdefault("train_loss_running", []).append(loss)
        self.done = epoch == self.cfg.epochs

    def end_epoch(self, epoch: int, seconds: float, diverged: bool = False) -> dict[str, Any] | None:
        """Book the epoch's training time, then measure and log; None when the trial diverged."""
        self.train_seconds += seconds
        self.epochs_run = epoch
        n = len(self.td.train_x)
        sums = dict(zip(self.sums, torch.stack(list(self.sums.values())).double().cpu().tolist()))
        train_loss = sums.pop("loss") / n
        if diverged or not math.isfinite(train_loss):
            self.record.update(status="diverged", diverged_epoch=epoch)
            self.done = True
            return None
        ratios = {k: float(v) for k, v in self.ratios.items()}
        running = {f"train_{k}_running": v / n for k, v in sums.items()}
        head = {"epoch": epoch, "seconds": self.train_seconds, "lr": float(self.lr[epoch * self.steps_per_epoch])}
        metrics = self.measure(epoch, {**head, "train_loss_running": train_loss, **running, **ratios})
        finite = [metrics[f"{s}_{m}"] for s in ("train", "val", "test") for m in self.task.finals if m != "acc"]
        if not all(math.isfinite(v) for v in finite):  # NaN weights: a finite step loss, then NaN outputs
            self.record.update(status="diverged", diverged_epoch=epoch)
            self.done = True
            return None
        self.log(epoch, metrics)
        self.done = epoch == self.cfg.epochs
        return metrics

    def finish(self, how: dict[str, Any]) -> dict[str, Any]:
        """The trial's flat record; `how` says how its steps ran (graph, partial batch, pack)."""
        cfg, model, record, history = self.cfg, self.model, self.record, self.history
        ok = record["status"] == "ok"
        if ok:
            record.update(diag.distinct_units(model))
            record["collapse_err"] = diag.linear_collapse_error(model, self.td.probe[0])
            record.update(diag.accumulated_vs_step(model, self.optimizer, cfg.lr))
        last = {k: v[-1] for k, v in history.items()}
        finals = [f"{s}_{m}" for s in ("train", "val", "test") for m in self.task.finals]
        record.update({k: (last[k] if ok else None) for k in finals})  # None: JSON has no NaN
        record.update(self.task.finish(cfg, self.td, self))
        record.update(
            {
                "epochs_run": self.epochs_run,
                "best_val_acc": max(history["val_acc"]),
                "seconds": time.perf_counter() - self.wall0,
                "train_seconds": self.train_seconds,
                "images_per_s": len(self.td.train_x) * self.epochs_run / max(self.train_seconds, 1e-9),
                "n_params": sum(p.numel() for p in model.parameters()),
                "n_train_used": len(self.td.train_x),
                "n_val_used": len(self.td.evals["val"][0]),
                "n_test_used": len(self.td.evals["test"][0]),
                **how,
                **provenance(cfg, self.device, self.td.source, self.td.digest, history),
            }
        )
        return record
