"""The registry's optimizers (device-tensor learning rate, foreach updates) take exactly torch.optim's steps,
with weight decay, momentum, a learning rate changed in place mid-run and a parameter that gets no gradient."""

import pytest
import torch
from torch import nn

from bench.engine.optim import ADAM_BETA2, EPS, OPTIMIZERS, RMSPROP_ALPHA, lr_table
from bench.engine.rules import make_config


def torch_twin(name: str, params, cfg):
    """The same method from torch.optim, as our registry configures it."""
    wd, m = cfg.weight_decay, cfg.momentum
    return {
        "sgd": lambda: torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd),
        "momentum": lambda: torch.optim.SGD(params, lr=cfg.lr, momentum=m, weight_decay=wd),
        "nesterov": lambda: torch.optim.SGD(params, lr=cfg.lr, momentum=m, nesterov=True, weight_decay=wd),
        "adagrad": lambda: torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=wd, eps=EPS),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=cfg.lr, alpha=RMSPROP_ALPHA, eps=EPS, weight_decay=wd),
        "adam": lambda: torch.optim.Adam(params, lr=cfg.lr, betas=(m, ADAM_BETA2), eps=EPS, weight_decay=wd),
    }[name]()


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3), nn.Linear(3, 3))


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_takes_torch_optims_steps(name):
    assert set(OPTIMIZERS.names()) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}  # a new one needs a twin here
    cfg = make_config({"optimizer": name, "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.8})
    ours, theirs = net(0), net(0)
    opt_a = OPTIMIZERS.get(name)(ours.parameters(), cfg)
    opt_b = torch_twin(name, list(theirs.parameters()), cfg)
    x, y = torch.randn(32, 6, generator=torch.Generator().manual_seed(1)), torch.randint(0, 3, (32,))
    for step in range(40):
        lr = 0.05 if step < 20 else 0.01  # a schedule: set in place on our side, in the param group on theirs
        opt_a.lr.fill_(lr)
        for group in opt_b.param_groups:
            group["lr"] = lr
        for model, opt in ((ours, opt_a), (theirs, opt_b)):
            opt.zero_grad()
            skip_last = step % 3 == 0  # the last layer gets no gradient every third step: skipped, as torch.optim does
            out = model[:-1](x) if skip_last else model(x)
            nn.functional.cross_entropy(out, y).backward()
            opt.step()
        for a, b in zip(ours.parameters(), theirs.parameters()):
            # rounding differs by an ulp per step and accumulates (RMSProp's sign-like steps most: ~5e-6 after 40);
            # a wrong formula is off by about lr = 0.05
            assert torch.allclose(a, b, rtol=1e-4, atol=2e-5), (name, step)
    assert float(opt_a.steps) == 40


def test_lr_table_holds_every_steps_learning_rate():
    table = lr_table("step", 0.1, 100, torch.device("cpu"))
    assert table.shape == (101,) and table.dtype == torch.float32
    assert (
        float(table[0]) == pytest.approx(0.1)
        and float(table[50]) == pytest.approx(0.01)
        and float(table[99]) == pytest.approx(0.001)
    )


def test_state_is_made_before_the_first_step():
    """A step that is captured in a CUDA graph may not allocate: every buffer exists from the start."""
    model = net(0)
    for name in OPTIMIZERS.names():
        opt = OPTIMIZERS.get(name)(model.parameters(), make_config({"optimizer": name}))
        before = {k: [t.data_ptr() for t in v] for k, v in opt.buffers.items()}
        model.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
        assert {k: [t.data_ptr() for t in v] for k, v in opt.buffers.items()} == before
        assert (opt.stat_name is None) == (name in ("sgd", "momentum", "nesterov"))
