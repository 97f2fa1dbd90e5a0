"""Trials of one architecture fused into one model (HFTA-style): their parameters stacked for one vmap'd
forward and backward, each keeping its own optimiser, learning rate and randomness."""

from __future__ import annotations

import torch
from torch import nn

from .models import Dropout
from .trial import Trial


class Pack:
    """Stacked views of the packed models' parameters and buffers for one vmap'd forward.

    Parameters are stacked at every forward (torch.stack is differentiable, so each model's own parameters
    receive exactly their own gradient); buffers (BatchNorm running statistics) live in one stacked tensor per
    name, and each model's buffer is a view of its slice, so the in-place running-average update inside the
    vmap'd forward lands in every model. Dropout masks come from the global RNG under vmap (one per trial).
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
        self.generators = {}
        for m in models:
            for mod in m.modules():
                if isinstance(mod, Dropout):
                    self.generators[mod] = mod.generator
                    mod.generator = None

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self.forward_all = vmap(one, in_dims=(0, 0, 0), randomness="different")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (k, B, ...) -> outputs (k, B, ...); model i sees x[i]."""
        params = {n: torch.stack([m.get_parameter(n) for m in self.models]) for n in self.param_names}
        return self.forward_all(params, self.buffers, x)

    def release(self) -> None:
        """Give every model its own copy of its buffers and its dropout generator again (before the pack changes)."""
        for name in self.buffers:
            owner, _, leaf = name.rpartition(".")
            for m in self.models:
                mod = m.get_submodule(owner) if owner else m
                mod._buffers[leaf] = mod._buffers[leaf].clone()
        for mod, gen in self.generators.items():
            mod.generator = gen


class PackStep:
    """One step of every trial of a pack: each trial's own batch (its order, augmentation and noise), one
    vmap'd forward and one backward, then each trial's own optimiser step and running sums. Like Trial.step it
    reads nothing back to the host, so a pack's step can be captured as one CUDA graph."""

    def __init__(self, trials: list[Trial]):
        self.trials = trials
        self.pack = Pack([t.model for t in trials])
        self.skip: set[int] = set()  # trials whose running loss went non-finite (CPU): no more optimiser steps

    def __call__(self, partial: bool = False) -> None:
        ts = self.trials
        batches = []
        for t in ts:
            start = t.full_steps * t.cfg.batch_size
            idx = t.order[start:] if partial else t.order[:start].view(t.full_steps, -1).index_select(0, t.pos).view(-1)
            x, targets = t.task.train_batch(t.cfg, t.td, idx, t.gen)
            if t.cfg.input_noise:
                x = x + t.cfg.input_noise * torch.randn(x.shape, generator=t.gen, device=t.device)
            t.optimizer.lr.copy_(t.lr.index_select(0, t.count).view(()))
            batches.append((x, targets, len(idx)))
        with ts[0].amp():
            outs = self.pack(torch.stack([x for x, _, _ in batches]))  # stack keeps channels_last
        losses = [t.task.loss(t.cfg, t.td, out, targets) for t, out, (_, targets, _) in zip(ts, outs, batches)]
        for t in ts:
            t.optimizer.zero_grad()
        torch.stack([loss for loss, _ in losses]).sum().backward()  # trial j's parameters get d loss_j only
        for j, (t, (loss, parts), (_, _, n)) in enumerate(zip(ts, losses, batches)):
            if j not in self.skip:
                t.optimizer.step()
            t.sums["loss"].add_(loss.detach() * n)
            for key, value in parts.items():
                t.sums.setdefault(key, torch.zeros((), device=t.device)).add_(value.detach() * n)
            t.count.add_(1)
            if not partial:
                t.pos.add_(1)

    def release(self) -> None:
        self.pack.release()
