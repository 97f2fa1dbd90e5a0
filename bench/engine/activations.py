"""Activation registry: any elementwise torch function is registered in one line; the diagnostics measure
saturation and dead units through its autograd derivative, so no activation has to state its own gradient."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from bench.registry import Registry

ACTIVATIONS = Registry("activation")
LEAKY_SLOPE = 0.01  # Leaky ReLU's negative slope (Maas et al. 2013; CS231n's value)
ELU_ALPHA = 1.0  # ELU's negative saturation value is -alpha
# A unit counts as saturated where its local gradient is below this fraction of the activation's largest
# gradient (sigmoid: output < 0.026 or > 0.974; tanh: |output| > 0.95; ReLU: input <= 0).
SATURATION_GRAD_FRACTION = 0.1


class Activation(nn.Module):
    """A named elementwise non-linearity; the diagnostics find every Activation module of a model by its type."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.name, self.fn = name, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def register(name: str, fn: Callable[[torch.Tensor], torch.Tensor], help: str) -> None:
    """Register an elementwise activation: `register("gelu", F.gelu, "...")` is all a new one needs."""
    ACTIVATIONS.register(name, help)(lambda: Activation(name, fn))


register("identity", lambda x: x, "no non-linearity: the whole net is one linear map")
register("sigmoid", torch.sigmoid, "1/(1+e^-x): outputs in (0,1), always positive, saturates at both ends")
register("tanh", torch.tanh, "zero-centred, outputs in (-1,1), saturates at both ends")
register("relu", torch.relu, "max(0,x): no saturation for x>0, dead (zero gradient) for x<0")
register(
    "leaky_relu",
    functools.partial(F.leaky_relu, negative_slope=LEAKY_SLOPE),
    f"x for x>0, {LEAKY_SLOPE}x otherwise: never fully dead",
)
register(
    "elu",
    functools.partial(F.elu, alpha=ELU_ALPHA),
    f"x for x>0, {ELU_ALPHA}(e^x-1) otherwise: saturates at -{ELU_ALPHA} for large negative x",
)
register("sigmoid_centered", lambda x: torch.sigmoid(x) - 0.5, "sigmoid(x)-0.5: the sigmoid's shape, zero-centred")
register("gelu", F.gelu, "x * Phi(x) (Hendrycks & Gimpel 2016): smooth ReLU, slightly negative for x<0")
register("silu", F.silu, "x * sigmoid(x) (swish; Elfwing et al. 2018): smooth ReLU, minimum -0.28 at x=-1.28")


@dataclass(frozen=True)
class Profile:
    """What the diagnostics need to know about an activation, measured on a dense grid of inputs."""

    max_grad: float  # largest |f'(x)|: saturation is relative to it
    bounds: tuple[float, float] | None  # (inf f, sup f) when the output is bounded (fixed histogram range), else None


PROFILE_RANGE = 30.0  # inputs -30..30 cover every saturation this project's activations reach


@functools.cache
def profile(name: str) -> Profile:
    """The activation's largest derivative and output bounds, from autograd on -30..30 in float64."""
    fn = ACTIVATIONS.get(name)().fn
    x = torch.linspace(-PROFILE_RANGE, PROFILE_RANGE, 60_001, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    lo, hi = float(y.detach().min()), float(y.detach().max())
    bounded = abs(lo) < PROFILE_RANGE / 10 and abs(hi) < PROFILE_RANGE / 10  # unbounded ones reach ~30 here
    bounds = (round(lo, 4), round(hi, 4)) if bounded and math.isfinite(lo) and math.isfinite(hi) else None
    return Profile(float(g.abs().max()), bounds)


def local_grad(act: Activation, x: torch.Tensor) -> torch.Tensor:
    """f'(x) elementwise for the activation's inputs x (autograd; float32)."""
    with torch.enable_grad():
        x = x.detach().float().requires_grad_(True)
        (g,) = torch.autograd.grad(act.fn(x).sum(), x)
    return g


def saturated(act: Activation, x: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the inputs x where the unit's local gradient is nearly zero (dead ReLUs included)."""
    return local_grad(act, x).abs() < SATURATION_GRAD_FRACTION * profile(act.name).max_grad
