"""What differs between tasks, behind one small interface the training loop calls (as AlgoPerf's workloads):
the task's data and model, its training batch, its loss, its evaluation sums and its extra record fields.
Classification lives here; localization and transfer in their own modules; TASKS maps cfg.task to each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.config import TrialConfig
from bench.data import Cifar10, Normalizer, Splits, augment, fit_normalizer, make_splits
from bench.registry import Registry

from .models import build_model

TASKS = Registry("task")
Targets = Any  # a label tensor, or a tuple of tensors indexed alike (labels, boxes)


def take(targets: Targets, index) -> Targets:
    """targets[index] for a tensor or each tensor of a tuple."""
    return tuple(t[index] for t in targets) if isinstance(targets, tuple) else targets[index]


@dataclass
class TaskData:
    """A task's data on the training device, shared by every trial of a pack (they use the same splits)."""

    train_x: torch.Tensor  # uint8 (N, C, H, W): the raw training images; a step gathers, transforms and normalises
    train_y: Targets  # what a training batch's targets are gathered from (labels)
    norm: Normalizer  # uint8 batch -> float32 model input, fitted on training data only
    evals: dict[str, tuple[torch.Tensor, Targets]]  # "train" (a fixed subset), "val", "test": (uint8 inputs, targets)
    probe: tuple[torch.Tensor, torch.Tensor]  # fixed training batch for the diagnostics: (model input, labels)
    make_model: Callable[
        [TrialConfig, tuple[int, ...], torch.Generator], nn.Module
    ]  # (trial config, input shape, init generator) -> model
    source: str  # data set name for the record
    digest: str  # data fingerprint for the record
    extra: dict[str, Any] = field(default_factory=dict)  # what the task keeps for itself

    @property
    def fmt(self) -> torch.memory_format:
        # channels_last for images on every device: cuDNN's and oneDNN's fast convolutions use it, and on the CPU the
        # grouped convolutions of packed trials are many times slower without it
        return torch.channels_last if len(self.norm.out_shape) == 3 else torch.contiguous_format

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x).contiguous(memory_format=self.fmt)


class Task:
    """The interface; the defaults are plain classification on CIFAR-10."""

    name = "classify"
    chance = 0.1  # accuracy of guessing: the report counts a diverged run at it
    packable = True  # trials of this task may train packed (bench.engine.loop.pack_key)
    finals: tuple[str, ...] = ("loss", "acc")  # per-split metrics the record keeps at the last epoch

    def rules(self, cfg: TrialConfig) -> list[tuple[bool, str]]:
        """Config rules of this task: (holds, message when it does not)."""
        return []

    def splits(self, cfg: TrialConfig, data: Cifar10) -> Splits:
        return make_splits(data, cfg.n_train, cfg.n_val, cfg.n_test)

    def normalizer(self, cfg: TrialConfig, data: Cifar10, splits: Splits) -> Normalizer:
        """The input normalisation, fitted on the training split only."""
        return fit_normalizer(cfg.normalization, splits.train_x, cfg.pca_k)

    def model_builder(self, cfg: TrialConfig, data: Cifar10, splits: Splits, norm: Normalizer, device: torch.device):
        """(trial config, input shape, init generator) -> a fresh model of that trial (each trial of a pack its own)."""
        return build_model

    def prepare(self, cfg: TrialConfig, data: Cifar10, device: torch.device) -> TaskData:
        """Splits on the device, the normaliser, the fixed evaluation subsets and probe batch, the model builder."""
        splits = self.splits(cfg, data)
        norm = self.normalizer(cfg, data, splits)
        make_model = self.model_builder(cfg, data, splits, norm, device)
        tx, ty = splits.train_x.to(device), splits.train_y.to(device)
        # Fixed random subsets (the same for every trial on these data; the split is sorted by class, so a plain
        # slice would hold one or two classes only).
        subset = torch.randperm(len(tx), generator=torch.Generator().manual_seed(0)).to(device)
        evals = {
            "train": (tx[subset[: cfg.eval_train_size]], ty[subset[: cfg.eval_train_size]]),
            "val": (splits.val_x.to(device), splits.val_y.to(device)),
            "test": (splits.test_x.to(device), splits.test_y.to(device)),
        }
        probe = tx[subset[: cfg.probe_size]], ty[subset[: cfg.probe_size]]
        td = TaskData(tx, ty, norm.to(device), evals, probe, make_model, data.source, data.digest)
        td.probe = (td.prep(probe[0]), probe[1])
        return td

    def train_batch(
        self, cfg: TrialConfig, td: TaskData, idx: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, Targets]:
        """One step's model input and targets from the training images at `idx` (drawing from the trial's `gen`)."""
        x = td.train_x.index_select(0, idx)
        if cfg.augment:
            x = augment(x, gen)
        return td.prep(x), td.train_y.index_select(0, idx)

    def loss(self, cfg: TrialConfig, td: TaskData, out, targets: Targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss to minimise, other batch means to keep a running sum of, named)."""
        return nn.functional.cross_entropy(out.float(), targets), {}

    def eval_sums(self, cfg: TrialConfig, td: TaskData, out, targets: Targets) -> dict[str, torch.Tensor]:
        """Sums over an evaluation batch; each becomes its mean per image: `loss`, `correct` (-> `acc`), ..."""
        logits = out.float()
        return {
            "loss": nn.functional.cross_entropy(logits, targets, reduction="sum"),
            "correct": (logits.argmax(1) == targets).sum().float(),
        }

    def probe_model(self, model: nn.Module) -> nn.Module:
        """What the per-layer diagnostics measure (its output is class logits)."""
        return model

    def finish(self, cfg: TrialConfig, td: TaskData, trial) -> dict[str, Any]:
        """Record fields only this task has, once training ended."""
        return {}


TASKS.register("classify", "CIFAR-10 classification: 10-way cross-entropy")(Task)
