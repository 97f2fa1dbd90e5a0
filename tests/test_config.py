"""Config parsing and the CLI's handling of bad input: exit 2, one line, no traceback."""

import dataclasses

import pytest

from bench.config import ConfigError, TrialConfig, parse_overrides
from bench.engine.rules import make_config


def test_types_are_checked():
    cfg = make_config(parse_overrides(["lr=0.5", "epochs=3", "batchnorm=false", "model=mlp"]))
    assert (cfg.lr, cfg.epochs, cfg.batchnorm, cfg.model) == (0.5, 3, False, "mlp")
    with pytest.raises(ConfigError, match="epochs expects int"):
        make_config({"epochs": "three"})
    with pytest.raises(ConfigError, match="valid keys: model, depth"):
        make_config({"learning_rate": "0.1"})
    with pytest.raises(ConfigError, match="valid: identity, sigmoid, tanh, relu"):
        make_config({"activation": "swish"})
    with pytest.raises(ConfigError, match="6n\\+2"):
        make_config({"model": "resnet", "depth": "21"})
    with pytest.raises(ConfigError, match="use model=mlp or linear"):
        make_config({"normalization": "pca", "pca_k": "64"})


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrialConfig().lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "colour=red"], "unknown config key 'colour'; valid keys:"),
        (["train", "optimizer=lbfgs"], "unknown optimizer 'lbfgs'; valid: sgd, momentum, nesterov, adagrad, rmsprop, adam"),
        (["train", "lr"], "expected key=value"),
        (["train", "device=cuda:7", "--data-dir", "/nonexistent"], "CUDA is not available"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(bench_cli, args, expected):
    status, _, err = bench_cli(*args)
    assert status == 2
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_list_prints_every_registry(bench_cli):
    status, out, err = bench_cli("list")
    assert status == 0, err
    for word in ["models:", "resnet", "sigmoid_centered", "nesterov", "cosine", "zca", "xavier", "gelu", "silu"]:
        assert word in out
