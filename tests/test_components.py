"""Every registered component at tiny size on CPU: forward, backward, shapes, init statistics."""

import math

import pytest
import torch
from torch import nn

from bench.config import TrialConfig
from bench.engine.activations import SATURATION_GRAD_FRACTION, profile, saturated
from bench.engine.components import ACTIVATIONS, INITS, OPTIMIZERS, SCHEDULES, fans
from bench.engine.diagnostics import distinct_units, linear_collapse_error, probe
from bench.engine.models import MODELS, Dropout, activation_layers, build_model, weight_layers
from bench.engine.rules import make_config

TINY = {"linear": {}, "mlp": dict(depth=2, width=16), "cnn": dict(width=4), "resnet": dict(depth=8, width=4)}


def tiny_cfg(**kw) -> TrialConfig:
    base = TINY[kw.get("model", "mlp")]
    return make_config({**base, **kw})


@pytest.mark.parametrize("model", MODELS.names())
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_model_activation_forward_backward(model, activation):
    cfg = tiny_cfg(model=model, activation=activation, init="he", dropout=0.2)
    net = build_model(cfg, (3, 32, 32), torch.Generator().manual_seed(0))
    x = torch.randn(4, 3, 32, 32)
    out = net(x)
    assert out.shape == (4, 10)
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert len(activation_layers(net)) >= (0 if model == "linear" else 2)


@pytest.mark.parametrize("residual", [True, False])
def test_resnet_depth_counts_weight_layers(residual):
    for depth in (8, 14, 20):
        net = build_model(tiny_cfg(model="resnet", depth=depth, residual=residual), (3, 32, 32), torch.Generator())
        assert len(weight_layers(net)) == depth  # 6n+2 = first conv + 6n convs + fc (option A shortcuts have no weights)


def test_residual_changes_the_function():
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    torch.manual_seed(0)
    a = build_model(tiny_cfg(model="resnet", residual=True, init="he"), (3, 32, 32), gen()).eval()
    torch.manual_seed(0)
    b = build_model(tiny_cfg(model="resnet", residual=False, init="he"), (3, 32, 32), gen()).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_saturation_follows_the_derivative_of_every_activation(name):
    """The autograd-based mask agrees with a finite-difference derivative on a grid (independent of autograd)."""
    act = ACTIVATIONS.get(name)()
    x = torch.linspace(-8, 8, 1601, dtype=torch.float64)
    h = 1e-5
    slope = (act(x + h) - act(x - h)) / (2 * h)
    away = torch.ones_like(x, dtype=torch.bool)
    away[(x.abs() < 1e-3)] = False  # the kink of the ReLU family at 0
    top = float(slope.abs().max())
    assert profile(name).max_grad == pytest.approx(top, rel=1e-3)
    want = slope.abs() < SATURATION_GRAD_FRACTION * top
    ambiguous = (slope.abs() - SATURATION_GRAD_FRACTION * top).abs() < 1e-4  # on the threshold itself
    got = saturated(act, x)
    assert torch.equal(got[away & ~ambiguous], want[away & ~ambiguous])


def test_activation_profiles_and_values():
    x = torch.tensor([-2.0, 0.0, 2.0])
    assert torch.allclose(ACTIVATIONS.get("sigmoid_centered")()(x), torch.sigmoid(x) - 0.5)
    assert torch.allclose(ACTIVATIONS.get("leaky_relu")()(x), torch.tensor([-0.02, 0.0, 2.0]))
    assert torch.allclose(ACTIVATIONS.get("elu")()(torch.tensor([-50.0])), torch.tensor([-1.0]))
    assert torch.allclose(ACTIVATIONS.get("gelu")()(x), torch.nn.functional.gelu(x))
    assert torch.allclose(ACTIVATIONS.get("silu")()(x), x * torch.sigmoid(x))
    sat = saturated(ACTIVATIONS.get("sigmoid")(), torch.tensor([-6.0, 0.0, 6.0]))
    assert sat.tolist() == [True, False, True]
    assert saturated(ACTIVATIONS.get("relu")(), torch.tensor([-1.0, 0.5])).tolist() == [True, False]
    assert profile("sigmoid").max_grad == pytest.approx(0.25) and profile("tanh").max_grad == pytest.approx(1.0)
    assert profile("gelu").max_grad == pytest.approx(1.1289, abs=1e-3) and profile("silu").max_grad == pytest.approx(
        1.0998, abs=1e-3
    )
    assert profile("sigmoid").bounds == (0.0, 1.0) and profile("tanh").bounds == (-1.0, 1.0)
    assert profile("sigmoid_centered").bounds == (-0.5, 0.5)
    assert all(profile(n).bounds is None for n in ("identity", "relu", "leaky_relu", "elu", "gelu", "silu"))


def _linear_weight(init, fan_in=512, fan_out=512, **kw):
    cfg = tiny_cfg(model="mlp", init=init, **kw)
    layer = nn.Linear(fan_in, fan_out)
    INITS.get(init)(layer.weight.data, cfg, torch.Generator().manual_seed(0))
    return layer.weight.data


@pytest.mark.parametrize("dist", ["normal", "uniform"])
def test_he_and_xavier_std_match_their_formulas(dist):
    he = _linear_weight("he", init_dist=dist)
    xavier = _linear_weight("xavier", init_dist=dist)
    assert abs(float(he.std()) / math.sqrt(2 / 512) - 1) < 0.05
    assert abs(float(xavier.std()) / math.sqrt(1 / 512) - 1) < 0.05
    if dist == "uniform":
        assert float(he.abs().max()) <= math.sqrt(3 * 2 / 512) + 1e-6


def test_conv_fans_and_normal_std():
    w = torch.empty(64, 32, 3, 3)
    assert fans(w) == (32 * 9, 64 * 9)
    assert abs(float(_linear_weight("normal", init_std=0.01).std()) - 0.01) < 0.0005


def test_zero_and_constant_init_and_biases():
    net = build_model(tiny_cfg(model="mlp", init="zero", batchnorm=False), (3, 32, 32), torch.Generator())
    assert all(float(p.detach().abs().sum()) == 0 for p in net.parameters())
    net = build_model(tiny_cfg(model="mlp", init="constant", init_std=0.5, batchnorm=False), (3, 32, 32), torch.Generator())
    for _, layer in weight_layers(net):
        assert torch.all(layer.weight == 0.5) and torch.all(layer.bias == 0)
    assert distinct_units(net)["L01.distinct_units"] == 1.0


def test_default_init_is_pytorch_default():
    torch.manual_seed(3)
    net = build_model(tiny_cfg(model="mlp", init="default", batchnorm=False), (3, 32, 32), torch.Generator())
    bound = 1 / math.sqrt(3072)
    w = weight_layers(net)[0][1].weight
    assert float(w.abs().max()) <= bound and float(w.std()) > 0.5 * bound / math.sqrt(3)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_reduces_a_quadratic(name):
    w = nn.Parameter(torch.tensor([3.0, -2.0]))
    cfg = make_config({"optimizer": name, "lr": 0.3, "weight_decay": 0.0})
    opt = OPTIMIZERS.get(name)([w], cfg)
    start = float((w**2).sum())
    for _ in range(100):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert float((w**2).sum()) < 0.5 * start


def test_schedules():
    total = 100
    assert SCHEDULES.get("constant")(total)(77) == 1.0
    step = SCHEDULES.get("step")(total)
    assert [step(0), step(49), step(50), step(75)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.01)]
    cos = SCHEDULES.get("cosine")(total)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)


def test_dropout_modes_expected_activation():
    torch.manual_seed(0)
    x = torch.ones(200_000)
    for mode, train_mean, test_mean in [("inverted", 1.0, 1.0), ("classic", 0.7, 0.7), ("unscaled", 0.7, 1.0)]:
        d = Dropout(0.3, mode)
        assert float(d.train()(x).mean()) == pytest.approx(train_mean, abs=0.01)
        assert float(d.eval()(x).mean()) == pytest.approx(test_mean, abs=1e-6)


def test_probe_reports_saturation_and_leaves_model_untouched():
    torch.manual_seed(0)
    cfg = tiny_cfg(model="mlp", activation="sigmoid", init="normal", init_std=1.0, batchnorm=True)
    net = build_model(cfg, (3, 32, 32), torch.Generator().manual_seed(0))
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    before = bn.running_mean.clone()
    x, y = torch.randn(32, 3, 32, 32) * 50, torch.randint(0, 10, (32,))
    state = torch.get_rng_state()
    out = probe(net, x, y, histograms=True)
    assert torch.equal(bn.running_mean, before) and torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in net.parameters())
    # gradients a training step left (a captured CUDA graph writes into them) are the same tensors afterwards
    grads = [torch.full_like(p, 7.0) for p in net.parameters()]
    for p, g in zip(net.parameters(), grads):
        p.grad = g
    probe(net, x, y)
    assert all(p.grad is g and bool((g == 7.0).all()) for p, g in zip(net.parameters(), grads))
    assert 0 <= out["A01.saturated"] <= 1 and out["L01.grad_norm"] > 0
    assert out["L02.same_sign"] == 1.0  # sigmoid outputs are all positive
    assert sum(out["A01.hist_counts"]) == 32 * 16


def test_identity_mlp_collapses_to_one_linear_map():
    net = build_model(tiny_cfg(model="mlp", activation="identity", batchnorm=True, depth=4), (3, 32, 32), torch.Generator())
    net.train()
    net(torch.randn(64, 3, 32, 32))  # move BN running stats off their defaults
    assert linear_collapse_error(net, torch.randn(8, 3, 32, 32)) < 1e-5  # float32 forward vs float64 product
    relu = build_model(tiny_cfg(model="mlp", activation="relu"), (3, 32, 32), torch.Generator())
    assert linear_collapse_error(relu, torch.randn(8, 3, 32, 32)) is None
