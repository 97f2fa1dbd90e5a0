"""The one training loop: every epoch, each trial's order, its steps (alone, side by side or fused; eagerly on
the CPU, replayed from CUDA graphs on a GPU), one device sync, then measurement and logging. Every task and
every public entry point (bench.engine.loop) trains through `fit`."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
from tqdm import tqdm

from . import diagnostics as diag
from .graph import CapturedStep
from .pack import PackStep
from .trial import DIVERGENCE_CHECK_STEPS, Trial


def fit(trials: list[Trial], mode: str, graphs: bool, progress: bool, label: str, measure: bool = True) -> dict[str, Any]:
    """Train `trials` (one task, one data set) for their epochs; return how the steps ran (for the records).

    measure=False skips per-epoch evaluation and diagnostics (a transfer source's pretraining): the trials
    then only train, and a non-finite running loss marks them diverged."""
    device = trials[0].device
    cfg = trials[0].cfg
    if measure:
        for t in trials:
            t.start()
    bar = tqdm(
        total=trials[0].steps_per_epoch * cfg.epochs,
        desc=label,
        disable=not progress,
        leave=False,
        unit="step",
        dynamic_ncols=True,
    )
    runner = EpochRunner(trials, mode, graphs, device)
    for epoch in range(1, cfg.epochs + 1):
        active = [t for t in trials if not t.done]
        seconds, diverged = runner.run_epoch(active, bar)
        for t in active:
            if not measure:
                t.end_training_epoch(epoch, seconds, t in diverged)
                continue
            metrics = t.end_epoch(epoch, seconds, t in diverged)  # packed trials are each charged the pack's wall time
            if metrics is not None and len(trials) == 1:
                bar.set_postfix(val_acc=f"{metrics['val_acc']:.3f}")
        if all(t.done for t in trials):
            break
    runner.close()
    bar.close()
    return runner.how()


class EpochRunner:
    """Runs one epoch of steps for the active trials of a group, the way the mode and device allow."""

    def __init__(self, trials: list[Trial], mode: str, graphs: bool, device: torch.device):
        self.trials, self.mode, self.graphs, self.device = trials, mode, graphs, device
        self.on_cuda = device.type == "cuda"
        self.captured: dict[Any, CapturedStep] = {}  # per trial (single, streams) or per active set (vmap)
        self.streams = {id(t): torch.cuda.Stream(device) for t in trials} if self.on_cuda and mode == "streams" else {}
        self.pack: PackStep | None = None

    def _step_of(self, key, fn, trials: list[Trial]) -> Any:
        """The callable that runs one whole-batch step: captured on CUDA when graphs are on, else `fn` itself."""
        if not self.graphs:
            return fn

        def rebind(fresh):
            for t in trials:
                t.rebind(fresh)

        if key not in self.captured:
            self.captured[key] = CapturedStep(fn, [t.gen for t in trials], self.device, rebind)
        return self.captured[key]

    def run_epoch(self, active: list[Trial], bar) -> tuple[float, set[Trial]]:
        """Every step of one epoch for `active`; (seconds, trials whose running loss went non-finite on the CPU)."""
        t0 = time.perf_counter()
        for t in active:
            t.begin_epoch()
        if self.mode == "vmap":
            diverged = self._vmap_epoch(active, bar)
        else:
            diverged = self._separate_epoch(active, bar)
        if self.on_cuda:
            torch.cuda.synchronize(self.device)  # the epoch's queued steps belong to its seconds
        return time.perf_counter() - t0, diverged

    def _separate_epoch(self, active: list[Trial], bar) -> set[Trial]:
        """Each trial steps on its own: alone, or interleaved step by step (on CUDA, each on its own stream)."""
        steps = {id(t): self._step_of(id(t), t.step, [t]) for t in active}
        diverged: set[Trial] = set()
        current = torch.cuda.current_stream(self.device) if self.streams else None
        for s in self.streams.values():
            s.wait_stream(current)  # the epoch's order and zeroed sums first
        full = active[0].full_steps
        for i in range(full + (active[0].rest > 0)):
            for t in active:
                if t in diverged:
                    continue
                run = steps[id(t)] if i < full else t.partial_step
                stream = self.streams.get(id(t))
                with torch.cuda.stream(stream) if stream is not None else nullcontext():
                    t.snapshot_then(run) if i == 0 else run()
                if not self.on_cuda and i % DIVERGENCE_CHECK_STEPS == 0 and not t.running_loss_finite():
                    diverged.add(t)
            bar.update(1)
            if len(diverged) == len(active):
                break
        for s in self.streams.values():
            current.wait_stream(s)
        return diverged

    def _vmap_epoch(self, active: list[Trial], bar) -> set[Trial]:
        key = tuple(id(t) for t in active)
        if self.pack is None or tuple(id(t) for t in self.pack.trials) != key:
            if self.pack is not None:  # a trial left: the old pack (and its graph, with its memory) goes
                self.captured.pop(tuple(id(t) for t in self.pack.trials), None)
                self.pack.release()
            self.pack = PackStep(active)
        pack = self.pack
        step = self._step_of(key, pack, active)
        diverged: set[Trial] = set()
        first = active[0]
        for i in range(first.full_steps + (first.rest > 0)):
            run = step if i < first.full_steps else (lambda: pack(partial=True))
            if i == 0:  # the update/weight ratios of each trial's first step
                before = [diag.snapshot(t.model) for t in active]
                run()
                for t, snap in zip(active, before):
                    t.ratios = diag.update_ratios(t.model, snap)
            else:
                run()
            if not self.on_cuda and i % DIVERGENCE_CHECK_STEPS == 0:
                for j, t in enumerate(active):
                    if t not in diverged and not t.running_loss_finite():
                        diverged.add(t)
                        pack.skip.add(j)
            bar.update(1)
            if len(diverged) == len(active):
                break
        return diverged

    def close(self) -> None:
        if self.pack is not None:
            self.pack.release()

    def how(self) -> dict[str, Any]:
        """How the steps ran, for the records: graph capture, the last partial batch, the pack mode."""
        first = self.trials[0]
        labels = sorted({c.label for c in self.captured.values()}) or ["eager"]
        partial = "none" if first.rest == 0 else ("eager" if self.graphs else "included")
        return {"graph": "; ".join(labels), "partial_batch": partial, "pack_mode": self.mode}
