"""Initialisation registry: each entry fills one Linear/Conv weight in place from the trial's generator;
`apply_init` initialises a whole model."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.registry import Registry

INITS = Registry("init")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear (out, in) or conv (out, in, kh, kw) weight."""
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _fill(weight: torch.Tensor, std: float, dist: str, generator: torch.Generator) -> None:
    if dist == "uniform":  # U(-a, a) has variance a^2/3
        a = std * math.sqrt(3.0)
        weight.uniform_(-a, a, generator=generator)
    else:
        weight.normal_(0.0, std, generator=generator)


@INITS.register("zero", "every weight and bias 0")
def init_zero(weight, cfg, generator):
    weight.zero_()


@INITS.register("constant", "every weight = init_std (biases 0)")
def init_constant(weight, cfg, generator):
    weight.fill_(cfg.init_std)


@INITS.register("normal", "N(0, init_std^2) (uniform with the same variance if init_dist=uniform)")
def init_normal(weight, cfg, generator):
    _fill(weight, cfg.init_std, cfg.init_dist, generator)


@INITS.register("xavier", "variance 1/fan_in (the notes' Xavier; Glorot's 2/(fan_in+fan_out) is the same for square layers)")
def init_xavier(weight, cfg, generator):
    _fill(weight, math.sqrt(1.0 / fans(weight)[0]), cfg.init_dist, generator)


@INITS.register("he", "variance 2/fan_in (He et al. 2015): the factor 2 makes up for ReLU zeroing half its inputs")
def init_he(weight, cfg, generator):
    _fill(weight, math.sqrt(2.0 / fans(weight)[0]), cfg.init_dist, generator)


@INITS.register("default", "PyTorch's own: kaiming_uniform(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)); biases likewise")
def init_default(weight, cfg, generator):
    pass  # the modules were already initialised by PyTorch from the seeded global generator


def apply_init(model: nn.Module, cfg, generator: torch.Generator) -> None:
    """Initialise every Linear/Conv weight with cfg.init; zero their biases unless init=default."""
    if cfg.init == "default":
        return
    fn = INITS.get(cfg.init)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fn(module.weight, cfg, generator)
                if module.bias is not None:
                    module.bias.zero_()
