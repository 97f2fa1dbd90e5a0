"""task=transfer (bench/engine/transfer.py): target splits, frozen features, the cached source, ImageNet weights.

Most tests use a small synthetic data set (class-coloured noise images), so they run in seconds and
without the real CIFAR-10 copy; the CLI test uses the real copy."""

from __future__ import annotations

import pytest
import torch

import bench.engine.transfer as transfer
from bench.config import ConfigError
from bench.data import CIFAR10_CLASSES, Cifar10, DataError, class_subset_splits
from bench.engine.loop import train_trial
from bench.engine.models import weight_layers
from bench.engine.rules import make_config

TINY = dict(
    task="transfer",
    model="cnn",
    width=4,
    n_train=200,
    pretrain_epochs=2,
    pretrain_lr=0.05,
    per_class=20,
    n_val=50,
    n_test=50,
    epochs=2,
    batch_size=32,
    eval_train_size=50,
    probe_size=16,
    device="cpu",
)


def synthetic(train_per_class: int = 60, test_per_class: int = 20) -> Cifar10:
    """10 classes of 32x32 noise images, each class tinted its own colour (learnable, not trivially)."""
    g = torch.Generator().manual_seed(0)
    tint = torch.randint(40, 216, (10, 3, 1, 1), generator=g)

    def make(n):
        y = torch.arange(10).repeat_interleave(n)
        x = (tint[y] + torch.randint(-40, 40, (len(y), 3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
        return x, y

    (tx, ty), (sx, sy) = make(train_per_class), make(test_per_class)
    return Cifar10(tx, ty, sx, sy, CIFAR10_CLASSES, "synthetic", "synthetic0000000", "")


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return synthetic()


@pytest.fixture
def built(monkeypatch):
    """Every target model the transfer task builds, in order (to inspect it after train_trial)."""
    models = []
    real = transfer.target_model

    def spy(*args, **kwargs):
        models.append(real(*args, **kwargs))
        return models[-1]

    monkeypatch.setattr(transfer, "target_model", spy)
    return models


@pytest.fixture
def pretrains(monkeypatch):
    """A counter of source pretrainings."""
    calls = []
    real = transfer.pretrain

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(transfer, "pretrain", spy)
    return calls


def test_target_splits_hold_only_target_classes_remapped(data):
    s = class_subset_splits(data, transfer.TARGET_CLASSES, per_class=20, n_val=50, n_test=0)
    assert torch.equal(torch.bincount(s.train_y, minlength=5), torch.full((5,), 20))
    assert torch.equal(torch.bincount(s.val_y, minlength=5), torch.full((5,), 10))
    assert torch.equal(torch.bincount(s.test_y, minlength=5), torch.full((5,), 20))  # n_test=0: all 20 per class
    for idx, labels, y in (
        (s.train_idx, s.train_y, data.train_y),
        (s.val_idx, s.val_y, data.train_y),
        (s.test_idx, s.test_y, data.test_y),
    ):
        assert set(y[idx].tolist()) == {5, 6, 7, 8, 9}
        assert torch.equal(labels, y[idx] - 5)  # labels 0..4 in TARGET_CLASSES order
    assert not set(s.train_idx.tolist()) & set(s.val_idx.tolist())
    smaller = class_subset_splits(data, transfer.TARGET_CLASSES, per_class=5, n_val=50)
    assert set(smaller.train_idx.tolist()) < set(s.train_idx.tolist())  # nested sizes, same validation
    assert torch.equal(smaller.val_idx, s.val_idx)
    with pytest.raises(DataError, match="per_class=51"):
        class_subset_splits(data, transfer.TARGET_CLASSES, per_class=51, n_val=50)
    with pytest.raises(DataError, match="multiple of 5"):
        class_subset_splits(data, transfer.TARGET_CLASSES, per_class=5, n_val=52)


@pytest.mark.parametrize("mode", ["linear", "mlp"])
def test_frozen_features_do_not_change_and_head_has_5_outputs(data, built, mode):
    record = train_trial(make_config(dict(TINY, transfer=mode)), progress=False, data=data)
    assert record["status"] == "ok" and record["n_train_used"] == 100 and record["n_test_used"] == 50
    model = built[-1]
    head = model[-1]
    assert isinstance(head, torch.nn.Linear) and head.out_features == 5
    source = torch.load(transfer.source_path(make_config(TINY), data.digest), weights_only=True)["state_dict"]
    backbone = {k: v for k, v in model.state_dict().items() if int(k.split(".")[0]) < model.frozen}
    assert backbone and set(backbone) == {k for k in source if int(k.split(".")[0]) < model.frozen}
    for key, value in backbone.items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, source[key]), key
    assert all(not p.requires_grad for m in list(model)[: model.frozen] for p in m.parameters())
    head_name = "L%02d" % len(weight_layers(model))
    assert all(r == 0.0 for r in record["history.L01.update_ratio"])  # first conv: frozen
    assert all(r > 0.0 for r in record[f"history.{head_name}.update_ratio"])  # the head trains


def test_finetune_trains_the_features_and_scratch_needs_no_source(data, built, pretrains):
    train_trial(make_config(dict(TINY, transfer="scratch")), progress=False, data=data)
    assert pretrains == [] and built[-1].frozen == 0
    train_trial(make_config(dict(TINY, transfer="finetune")), progress=False, data=data)
    model = built[-1]
    source = torch.load(transfer.source_path(make_config(TINY), data.digest), weights_only=True)["state_dict"]
    assert model.frozen == 0 and not torch.equal(model.state_dict()["0.weight"], source["0.weight"])


def test_source_is_cached_and_reused_and_results_do_not_depend_on_the_cache(data, pretrains):
    first = train_trial(make_config(dict(TINY, transfer="linear")), progress=False, data=data)
    assert len(pretrains) == 1 and transfer.source_path(make_config(TINY), data.digest).is_file()
    second = train_trial(make_config(dict(TINY, transfer="linear")), progress=False, data=data)
    train_trial(make_config(dict(TINY, transfer="mlp", lr=0.01, per_class=10, epochs=1)), progress=False, data=data)
    assert len(pretrains) == 1  # same source: other target settings and lr do not retrain it
    assert first["history.val_loss"] == second["history.val_loss"]  # pretrained now or loaded: the same trial
    train_trial(make_config(dict(TINY, transfer="linear", seed=1)), progress=False, data=data)
    train_trial(make_config(dict(TINY, transfer="linear", pretrain_lr=0.02)), progress=False, data=data)
    assert len(pretrains) == 3  # a new seed or source lr is a new source
    info = transfer.source_info(make_config(TINY), data.digest)
    assert info["epochs"] == 2 and info["n_train"] == 200 and 0.0 <= info["test_acc"] <= 1.0
    assert first["source.test_acc"] == info["test_acc"] and first["source.epochs"] == 2  # the record says which source


def test_source_learns_the_source_classes(data):
    cfg = make_config(dict(TINY, width=8, pretrain_epochs=4, transfer="linear"))
    train_trial(cfg, progress=False, data=data)
    assert transfer.source_info(cfg, data.digest)["test_acc"] > 0.5  # tinted classes: chance is 0.2


def _fake_resnet18(path):
    torch.manual_seed(0)
    state = transfer._resnet18().state_dict()
    torch.save(state, path)
    return state


def test_imagenet_weights_load_with_weights_only(data, tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    state = _fake_resnet18(path)
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    cfg = make_config(dict(TINY, source="imagenet", weights=str(path), transfer="linear"))
    td = transfer.Transfer().prepare(cfg, data, torch.device("cpu"))
    assert calls == [True]
    model = td.make_model(cfg, td.norm.out_shape, torch.Generator().manual_seed(0))
    assert torch.equal(model[1].weight, state["conv1.weight"]) and model[-1].out_features == 5
    assert all(not p.requires_grad for m in list(model)[: model.frozen] for p in m.parameters())
    assert model(td.prep(td.train_x[:2])).shape == (2, 5)


def test_bad_weights_give_a_clear_data_error(data, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        transfer.load_imagenet_weights(str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="unreadable"):
        transfer.load_imagenet_weights(str(garbage))
    pickled = tmp_path / "pickled.pth"  # arbitrary objects are refused (weights_only=True)
    torch.save({"fc.weight": torch.zeros(1), "extra": ConfigError("not a tensor")}, pickled)
    with pytest.raises(DataError, match="unreadable"):
        transfer.load_imagenet_weights(str(pickled))
    other = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), other)
    with pytest.raises(DataError, match="does not hold torchvision ResNet-18"):
        transfer.load_imagenet_weights(str(other))
    with pytest.raises(ConfigError, match="source=imagenet needs weights"):
        make_config(dict(TINY, source="imagenet", transfer="linear"))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["source=imagenet", "weights=/nonexistent/resnet18.pth"], "does not exist"),
        (["source=imagenet"], "source=imagenet needs weights"),
    ],
)
def test_cli_bad_weights_exit_2_in_one_line(bench_cli, data_dir, tmp_path, args, expected):
    env_args = ["task=transfer", "transfer=linear", "per_class=10", "n_val=50", "n_test=50", "epochs=1", "device=cpu"]
    status, out, err = bench_cli("train", *env_args, *args, "--data-dir", data_dir, "--no-progress")
    assert status == 2, out + err
    assert expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
