"""A training step never waits for the host: every operator it dispatches (forward, backward, optimiser, data,
randomness, learning rate) is recorded on the CPU, and none reads a tensor's value back to Python or makes a
tensor from host data. That is what lets a step be captured as a CUDA graph and run without syncs; the GPU half
of the check (torch.cuda.set_sync_debug_mode("error") and graph replay) is tests/test_cuda.py and gpu-check."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.engine.device import resolve_device
from bench.engine.loop import task_of
from bench.engine.optim import OPTIMIZERS
from bench.engine.pack import PackStep
from bench.engine.rules import make_config
from bench.engine.trial import Trial

# aten operators that read a value on the host (item(), float(), bool(), data-dependent shapes) or copy host data in
HOST_READS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal", "lift_fresh", "lift_fresh_copy", "tolist"}
TINY = dict(n_train=200, n_val=100, n_test=100, epochs=1, eval_train_size=50, probe_size=16, batch_size=64, device="cpu")


class Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


def trials_for(cifar, k: int = 1, **overrides) -> list[Trial]:
    cfgs = [make_config({**TINY, **overrides, "seed": s}) for s in range(k)]
    device = resolve_device("cpu")
    task = task_of(cfgs[0])
    td = task.prepare(cfgs[0], cifar, device)
    trials = [Trial(c, task, td, device) for c in cfgs]
    for t in trials:
        t.begin_epoch()
    return trials


def recorded(step) -> list[str]:
    step()  # the first step may make state lazily (e.g. a running sum); steady state is what must stay on the device
    with Recorder() as rec:
        step()
    return rec.ops


@pytest.mark.parametrize(
    "overrides",
    [{"optimizer": name, "model": "mlp", "dropout": 0.3, "input_noise": 0.1} for name in OPTIMIZERS.names()]
    + [
        {"model": "cnn", "width": 4, "augment": True, "schedule": "step"},
        {"model": "resnet", "depth": 8, "width": 4, "augment": True},
        {"task": "localize", "model": "cnn", "width": 4, "background": "noise"},
        {
            "task": "transfer",
            "model": "cnn",
            "width": 4,
            "transfer": "linear",
            "n_train": 100,
            "pretrain_epochs": 1,
            "per_class": 20,
            "batch_size": 32,
            "n_val": 50,
            "n_test": 50,
        },
    ],
    ids=lambda o: "-".join(str(v) for v in o.values()),
)
def test_a_steady_state_step_reads_nothing_on_the_host(cifar, overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    (trial,) = trials_for(cifar, **overrides)
    ops = recorded(trial.step)
    assert len(ops) > 20  # forward, backward and the update were all seen
    assert not HOST_READS & set(ops), sorted(HOST_READS & set(ops))


def test_a_packed_step_reads_nothing_on_the_host(cifar):
    trials = trials_for(cifar, 3, model="mlp", augment=True, input_noise=0.1)
    ops = recorded(PackStep(trials))
    assert not HOST_READS & set(ops), sorted(HOST_READS & set(ops))


def test_the_recorder_catches_a_host_read():
    """The check itself can fail: a step that calls float() on a tensor is caught."""
    x = torch.ones(3)
    with Recorder() as rec:
        float(x.sum())
    assert HOST_READS & set(rec.ops)


def test_the_learning_rate_follows_the_schedule_on_the_device(cifar):
    (trial,) = trials_for(cifar, schedule="cosine", model="mlp", epochs=2, lr=0.1)
    rates = []
    for _ in range(trial.full_steps):
        trial.step()
        rates.append(float(trial.optimizer.lr))
    total = trial.steps_per_epoch * 2
    want = [0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / total)).item()) for s in range(trial.full_steps)]
    assert rates == pytest.approx(want, rel=1e-5)
    assert int(trial.count) == trial.full_steps and int(trial.pos) == trial.full_steps
