"""One trial end to end on real CIFAR-10 images (CPU, seconds each)."""

import json
import math
import platform
import subprocess
import sys
from importlib import metadata

import torch

from bench.engine.loop import train_trial
from bench.engine.rules import make_config

TINY = dict(n_train=500, n_val=200, n_test=200, epochs=1, eval_train_size=200, probe_size=64, device="cpu")


def test_short_cnn_trial_learns_well_above_chance(cifar):
    cfg = make_config(dict(model="cnn", width=16, n_train=2000, n_val=500, n_test=1000, epochs=2, lr=0.05, device="cpu"))
    record = train_trial(cfg, progress=False, data=cifar)
    assert record["status"] == "ok"
    assert record["test_acc"] > 0.20, record["test_acc"]  # chance is 0.10
    # train accuracy is measured on images of every class (the split is sorted by class)
    assert abs(record["train_acc"] - record["val_acc"]) < 0.15, (record["train_acc"], record["val_acc"])
    assert record["epochs_run"] == 2 and len(record["history.val_acc"]) == 3  # epoch 0 = at init
    assert record["n_train_used"] == 2000 and record["n_test_used"] == 1000
    assert record["images_per_s"] > 0 and record["seconds"] >= record["train_seconds"] > 0
    assert "JPEG" in record["data_source"] and record["device"].startswith("cpu")
    assert record["config.model"] == "cnn" and record["torch_version"]
    # the versions it ran with, as installed (not as imported): torch's agrees with the module's own
    assert record["versions.python"] == platform.python_version()
    assert record["versions.torch"] == torch.__version__.split("+")[0] or record["versions.torch"] == torch.__version__
    assert record["versions.optuna"] == metadata.version("optuna")
    mlflows = 0  # full MLflow, or only the skinny client (the core install): whichever is installed is named
    for lib in ("mlflow", "mlflow-skinny"):
        try:
            installed = metadata.version(lib)
        except metadata.PackageNotFoundError:
            assert f"versions.{lib}" not in record
            continue
        assert record[f"versions.{lib}"] == installed
        mlflows += 1
    assert mlflows >= 1
    json.dumps(record, allow_nan=False)  # flat and strictly JSON-serialisable


def test_same_seed_same_metrics_different_seed_differs(cifar):
    cfg = make_config(dict(model="mlp", depth=2, width=64, augment=True, dropout=0.2, **TINY))
    a = train_trial(cfg, progress=False, data=cifar)
    b = train_trial(cfg, progress=False, data=cifar)
    c = train_trial(make_config({"seed": 1}, base=cfg), progress=False, data=cifar)
    for key in ("history.train_loss", "history.val_acc", "history.test_loss", "history.A01.act_std", "history.L01.grad_norm"):
        assert a[key] == b[key], key
    assert a["history.test_loss"] != c["history.test_loss"]


def test_huge_learning_rate_diverges_as_a_result(cifar):
    cfg = make_config(dict(model="mlp", depth=3, width=64, batchnorm=False, optimizer="sgd", lr=1e6, init="he", **TINY))
    record = train_trial(cfg, progress=False, data=cifar)
    assert record["status"] == "diverged" and record["diverged_epoch"] == 1
    assert record["test_acc"] is None
    json.dumps(record, allow_nan=False)


def test_diagnostics_tell_the_init_story(cifar):
    """small-init-vanish in miniature: N(0, 0.01^2) tanh activations shrink layer by layer; Xavier's do not."""
    base = dict(model="mlp", depth=6, width=128, batchnorm=False, activation="tanh", **TINY)
    small = train_trial(make_config(dict(init="normal", init_std=0.01, **base)), progress=False, data=cifar)
    xavier = train_trial(make_config(dict(init="xavier", **base)), progress=False, data=cifar)
    s = [small["history.A%02d.act_std" % i][0] for i in range(1, 7)]
    x = [xavier["history.A%02d.act_std" % i][0] for i in range(1, 7)]
    assert s[5] < 1e-3 * s[0] and all(b < a for a, b in zip(s, s[1:]))
    assert x[5] > 0.1 * x[0]
    zero = train_trial(make_config(dict(init="zero", **base)), progress=False, data=cifar)
    assert zero["L02.distinct_units"] == 1.0 and xavier["L02.distinct_units"] == 128.0
    assert sum(zero["init.A01.hist_counts"]) == 64 * 128


def test_identity_net_collapses_and_linear_model_runs(cifar):
    ident = train_trial(
        make_config(dict(model="mlp", activation="identity", depth=3, width=64, **TINY)), progress=False, data=cifar
    )
    assert ident["collapse_err"] is not None and ident["collapse_err"] < 1e-4
    lin = train_trial(make_config(dict(model="linear", **TINY)), progress=False, data=cifar)
    assert lin["status"] == "ok" and lin["collapse_err"] is None


def test_adagrad_records_effective_steps(cifar):
    cfg = make_config(dict(model="mlp", depth=2, width=32, optimizer="adagrad", lr=0.01, **TINY))
    record = train_trial(cfg, progress=False, data=cifar)
    steps = record["adagrad.bin_eff_lr"]
    assert len(steps) == 10 and steps[0] > steps[-1]  # larger accumulated gradient -> smaller step
    assert record["history.eff_lr_median"][0] is None  # no statistics before the first step
    assert record["history.eff_lr_median"][1] < 0.01


def test_cli_train_json_to_stdout_is_the_record_alone(data_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "train",
            "model=mlp",
            "depth=1",
            "width=32",
            "n_train=500",
            "n_val=200",
            "n_test=200",
            "epochs=1",
            "--json",
            "-",
            "--no-progress",
            "--data-dir",
            data_dir,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)  # `--json -`: the record alone on stdout
    assert record["status"] == "ok" and math.isfinite(record["test_acc"])
    assert "train_loss" in proc.stderr and "status ok" in proc.stderr  # the table and summary go to stderr with --json
