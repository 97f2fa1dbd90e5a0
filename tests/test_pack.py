"""Packed trials (bench.engine.loop.train_packed): fused (vmap) each follows the curve it follows alone,
BatchNorm running statistics included, with dropout masks independent per trial; side by side (streams) each
follows it exactly; a diverging trial leaves the pack without disturbing the others."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.engine.device import resolve_device
from bench.engine.loop import pack_key, task_of, train_packed, train_trial
from bench.engine.models import Dropout
from bench.engine.pack import Pack
from bench.engine.rules import make_config
from bench.engine.trial import Trial

BASE = dict(n_train=300, n_val=100, n_test=100, epochs=2, eval_train_size=100, probe_size=32, batch_size=64, device="cpu")
CURVES = ["train_loss_running", "val_loss", "val_acc", "test_loss", "train_loss"]


def _close(alone: dict, packed: dict) -> None:
    """Same curves up to floating-point reassociation (grouped vs plain convolutions sum in another
    order, and the difference grows a little with every step): losses within 0.1%, accuracies
    within two of the 100 validation/test images."""
    for key in CURVES:
        a, p = alone[f"history.{key}"], packed[f"history.{key}"]
        assert len(a) == len(p), key
        tol = {"rel_tol": 0.0, "abs_tol": 0.02} if key.endswith("_acc") else {"rel_tol": 1e-3, "abs_tol": 1e-4}
        assert all(math.isclose(x, y, **tol) for x, y in zip(a, p)), (key, a, p)


@pytest.mark.parametrize(
    "model",
    [
        {"model": "cnn", "width": 8},
        {"model": "resnet", "depth": 8, "width": 4},
        {"model": "mlp", "depth": 2, "width": 64, "batchnorm": False},
    ],
)
def test_packed_trials_follow_their_lone_curves(cifar, model):
    cfgs = [
        make_config({**BASE, **model, "seed": 0, "lr": 0.05}),
        make_config({**BASE, **model, "seed": 1, "lr": 0.01, "optimizer": "adam", "init": "he"}),
        make_config({**BASE, **model, "seed": 2, "lr": 0.1, "optimizer": "sgd", "augment": True, "input_noise": 0.1}),
    ]
    alone = [train_trial(c, progress=False, data=cifar) for c in cfgs]
    packed = train_packed(cfgs, progress=False, data=cifar, mode="vmap")
    for a, p in zip(alone, packed):
        assert p["status"] == a["status"] == "ok" and p["packed"] == 3 and p["pack_mode"] == "vmap"
        _close(a, p)  # val/test losses are measured in eval mode: BatchNorm running statistics match too
    # the three trials really differ (the pack did not train one model three times)
    assert len({round(r["history.val_loss"][-1], 4) for r in packed}) == 3


def test_packed_batchnorm_buffers_are_each_trials_own(cifar):
    cfgs = [make_config({**BASE, "model": "cnn", "width": 8, "seed": s, "lr": lr}) for s, lr in ((0, 0.05), (1, 0.2))]
    device = resolve_device("cpu")
    task = task_of(cfgs[0])
    td = task.prepare(cfgs[0], cifar, device)
    trials = [Trial(c, task, td, device) for c in cfgs]
    pack = Pack([t.model for t in trials])
    x = torch.randn(2, 16, 3, 32, 32)
    x[1] *= 3.0  # trial 1 sees inputs with a larger spread
    pack(x)
    bn = [[m for m in t.model.modules() if isinstance(m, nn.BatchNorm2d)][0] for t in trials]
    assert bn[0].num_batches_tracked.item() == bn[1].num_batches_tracked.item() == 1
    assert not torch.allclose(bn[0].running_var, bn[1].running_var)
    pack.release()
    before = bn[1].running_var.clone()
    bn[0].running_var.add_(1.0)  # after release the models no longer share storage
    assert torch.equal(bn[1].running_var, before)


def test_packed_dropout_masks_are_independent_and_scaled():
    torch.manual_seed(0)
    models = []
    for _ in range(2):
        lin = nn.Linear(8, 8, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.eye(8))
        models.append(nn.Sequential(lin, Dropout(0.5, "inverted")).train())
    out = Pack(models)(torch.ones(2, 2000, 8)).detach()
    assert set(out.unique().tolist()) <= {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-p)
    for i in range(2):
        assert abs(float((out[i] == 0).float().mean()) - 0.5) < 0.03
    assert float((out[0] != out[1]).float().mean()) > 0.4  # each trial draws its own mask


def test_a_diverging_trial_leaves_the_pack_and_the_others_go_on(cifar):
    cfgs = [
        make_config({**BASE, "model": "mlp", "depth": 2, "width": 64, "batchnorm": False, "seed": 0, "lr": 0.05, "epochs": 3}),
        make_config(
            {
                **BASE,
                "model": "mlp",
                "depth": 2,
                "width": 64,
                "batchnorm": False,
                "seed": 1,
                "lr": 1e6,
                "optimizer": "sgd",
                "epochs": 3,
                "normalization": "raw",
            }
        ),
    ]
    with pytest.raises(ValueError, match="share every config field"):  # normalization differs: not one architecture
        train_packed(cfgs, progress=False, data=None)
    cfgs[1] = make_config(
        {
            **BASE,
            "model": "mlp",
            "depth": 2,
            "width": 64,
            "batchnorm": False,
            "seed": 1,
            "lr": 1e6,
            "optimizer": "sgd",
            "epochs": 3,
        }
    )
    alone = train_trial(cfgs[0], progress=False, data=cifar)
    for mode in ("vmap", "streams"):
        packed = train_packed(cfgs, progress=False, data=cifar, mode=mode)
        assert packed[1]["status"] == "diverged" and packed[1]["test_acc"] is None
        assert packed[0]["status"] == "ok" and packed[0]["epochs_run"] == 3
        _close(alone, packed[0])


def test_pack_key_groups_only_what_can_share_a_forward():
    a = make_config({"seed": 0, "lr": 0.1, "optimizer": "adam", "init": "he"})
    assert pack_key(a) == pack_key(make_config({"seed": 3, "lr": 0.01, "optimizer": "sgd", "init": "xavier"}))
    assert pack_key(a) != pack_key(make_config({"dropout": 0.5}))
    assert pack_key(a) != pack_key(make_config({"width": 8}))
    assert pack_key(make_config({"task": "localize"})) is None


def test_side_by_side_trials_follow_their_lone_curves_exactly(cifar):
    """streams mode: each trial steps on its own (on CUDA from its own graph on its own stream): the same numbers
    as alone, dropout masks included (each trial draws from its own generator)."""
    model = {"model": "mlp", "depth": 2, "width": 64, "dropout": 0.3}
    cfgs = [
        make_config({**BASE, **model, "seed": 0, "lr": 0.05}),
        make_config({**BASE, **model, "seed": 1, "lr": 0.01, "optimizer": "adam", "augment": True, "input_noise": 0.1}),
    ]
    alone = [train_trial(c, progress=False, data=cifar) for c in cfgs]
    packed = train_packed(cfgs, progress=False, data=cifar, mode="streams")
    for a, p in zip(alone, packed):
        assert p["packed"] == 2 and p["pack_mode"] == "streams"
        for key in CURVES + ["probe_loss", "L01.grad_norm", "A01.act_std"]:  # the diagnostics' dropout masks too
            assert a[f"history.{key}"] == p[f"history.{key}"], key
    assert packed[0]["history.val_loss"] != packed[1]["history.val_loss"]
