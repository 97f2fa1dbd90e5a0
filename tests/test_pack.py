"""Packed trials (bench.engine.loop.train_packed): each follows the curve it follows alone, BatchNorm
running statistics included; dropout masks are independent per trial; a diverging trial leaves the
pack without disturbing the others; the runner packs trials and still finishes each exactly once."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
from torch import nn

from bench.config import make_config
from bench.engine.loop import _Pack, pack_key, train_packed, train_trial
from bench.engine.models import Dropout

from studyrun import SLOW_STUDY, finished_trials, runs_of

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
    packed = train_packed(cfgs, progress=False, data=cifar)
    for a, p in zip(alone, packed):
        assert p["status"] == a["status"] == "ok" and p["packed"] == 3
        _close(a, p)  # val/test losses are measured in eval mode: BatchNorm running statistics match too
    # the three trials really differ (the pack did not train one model three times)
    assert len({round(r["history.val_loss"][-1], 4) for r in packed}) == 3


def test_packed_batchnorm_buffers_are_each_trials_own(cifar):
    cfgs = [make_config({**BASE, "model": "cnn", "width": 8, "seed": s, "lr": lr}) for s, lr in ((0, 0.05), (1, 0.2))]
    from bench.engine.loop import Trial, resolve_device

    trials = [Trial(c, None, cifar, resolve_device("cpu")) for c in cfgs]
    pack = _Pack([t.model for t in trials])
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
    out = _Pack(models)(torch.ones(2, 2000, 8)).detach()
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
    packed = train_packed(cfgs, progress=False, data=cifar)
    assert packed[1]["status"] == "diverged" and packed[1]["test_acc"] is None
    assert packed[0]["status"] == "ok" and packed[0]["epochs_run"] == 3
    _close(alone, packed[0])


def test_pack_key_groups_only_what_can_share_a_forward():
    a = make_config({"seed": 0, "lr": 0.1, "optimizer": "adam", "init": "he"})
    assert pack_key(a) == pack_key(make_config({"seed": 3, "lr": 0.01, "optimizer": "sgd", "init": "xavier"}))
    assert pack_key(a) != pack_key(make_config({"dropout": 0.5}))
    assert pack_key(a) != pack_key(make_config({"width": 8}))
    assert pack_key(make_config({"task": "localize"})) is None


PACK_STUDY = """
name = "packs"
claims = ["learning-rate"]
[base]
model = "mlp"
depth = 2
width = 64
batchnorm = false
n_train = 300
n_val = 100
n_test = 100
epochs = 1
eval_train_size = 100
probe_size = 32
[factors.opt]
sgd = { optimizer = "sgd" }
adam = { optimizer = "adam" }
[tuning]
param = "lr"
low = 0.001
high = 0.5
log = true
trials = 3
[profiles.smoke]
seeds = 2
[profiles.quick]
seeds = 2
[profiles.full]
seeds = 3
"""


@pytest.mark.slow
def test_runner_packs_tuning_and_final_trials(tmp_path, data_dir):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "packs.toml").write_text(PACK_STUDY)
    env = {**os.environ, "BENCH_STUDIES_DIR": str(tmp_path / "studies")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "study",
            "packs",
            "--profile",
            "smoke",
            "--no-progress",
            "--data-dir",
            data_dir,
            "--pack",
            "4",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, runs = runs_of(tmp_path, "packs")
    children = [r for r in runs if r.data.tags.get("bench.stage")]
    finals = [r for r in children if r.data.tags["bench.stage"] == "final"]
    tunes = [r for r in children if r.data.tags["bench.stage"] == "tune"]
    assert Counter((r.data.tags["bench.arm"], r.data.tags["bench.seed"]) for r in finals) == Counter(
        {(a, s): 1 for a in ("sgd", "adam") for s in ("0", "1")}
    )
    assert len(tunes) == 6 and all(r.info.status == "FINISHED" for r in children)
    # the final stage packs up to 4 trials: all four (arm, seed) share one architecture
    assert {r.data.tags.get("bench.packed") for r in finals} == {"4"}
    # tuning packs each arm's 3 trials, with distinct learning rates
    assert {r.data.tags.get("bench.packed") for r in tunes} == {"3"}
    for arm in ("sgd", "adam"):
        lrs = [r.data.tags["bench.tune_lr"] for r in tunes if r.data.tags["bench.arm"] == arm]
        assert len(set(lrs)) == 3
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "study",
            "packs",
            "--profile",
            "smoke",
            "--no-progress",
            "--data-dir",
            data_dir,
            "--pack",
            "4",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "is complete" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.slow
def test_interrupted_packed_study_reruns_every_claimed_trial(tmp_path, data_dir, sig):
    """--pack 4 over 2 arms x 3 seeds claims trials of both arms at once (two packs): an interrupt
    in the first leaves no claimed trial RUNNING for good; the rerun finishes each exactly once."""
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "slow.toml").write_text(SLOW_STUDY)
    env = {**os.environ, "BENCH_STUDIES_DIR": str(studies), "BENCH_DATA_DIR": data_dir}
    cmd = [sys.executable, "-m", "bench", "study", "slow", "--profile", "smoke", "--no-progress", "--pack", "4"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 180
    while time.time() < deadline and not [
        t for t in finished_trials(tmp_path) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs
    ]:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    claimed = [t for t in finished_trials(tmp_path) if t.state.name in ("RUNNING", "FAIL")]
    assert len(claimed) == 4  # the whole claim: the pack that was training and the trial waiting for its turn
    assert all("pid" in t.user_attrs for t in claimed)  # so a dead worker's claims are recognised as stale
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = finished_trials(tmp_path)
    complete = Counter((t.params["arm"], t.params["seed"]) for t in trials if t.state.name == "COMPLETE")
    assert complete == Counter({(arm, seed): 1 for arm in ("p0.0", "p0.5") for seed in range(3)})
    assert not [t for t in trials if t.state.name == "RUNNING"]
    _, runs = runs_of(tmp_path, "slow")
    assert not [r for r in runs if r.info.status == "RUNNING"]
