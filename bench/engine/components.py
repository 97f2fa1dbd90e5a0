"""Registries of activations, initialisations, optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from bench.registry import Registry

ACTIVATIONS = Registry("activation")
INITS = Registry("init")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")

# A unit counts as saturated where its local gradient is below this fraction of the
# activation's largest gradient (sigmoid: output < 0.026 or > 0.974; tanh: |output| > 0.95).
SATURATION_GRAD_FRACTION = 0.1


# ============================== activations ==============================
class Activation(nn.Module):
    """A named elementwise non-linearity that also knows its local gradient from its output.

    Diagnostics hook every Activation module, so `local_grad` lets them measure saturation
    without storing pre-activations.
    """

    def __init__(
        self,
        name: str,
        fn: Callable[[torch.Tensor], torch.Tensor],
        local_grad: Callable[[torch.Tensor], torch.Tensor],
        max_grad: float,
    ):
        super().__init__()
        self.name, self.fn, self.local_grad_fn, self.max_grad = name, fn, local_grad, max_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def local_grad(self, y: torch.Tensor) -> torch.Tensor:
        """d(output)/d(input) expressed through the output y."""
        return self.local_grad_fn(y)

    def saturated(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of units whose local gradient is nearly zero (dead ReLUs included)."""
        return self.local_grad(y) < SATURATION_GRAD_FRACTION * self.max_grad

    def extra_repr(self) -> str:
        return self.name


LEAKY_SLOPE = 0.01  # Leaky ReLU's negative slope (Maas et al. 2013; CS231n's value)
ELU_ALPHA = 1.0  # ELU's negative saturation value is -alpha


def _register_activation(name: str, help: str, fn, local_grad, max_grad: float = 1.0) -> None:
    ACTIVATIONS.register(name, help)(lambda: Activation(name, fn, local_grad, max_grad))


_register_activation("identity", "no non-linearity: the whole net is one linear map", lambda x: x, torch.ones_like)
_register_activation(
    "sigmoid", "1/(1+e^-x): outputs in (0,1), always positive, saturates at both ends", torch.sigmoid, lambda y: y * (1 - y), 0.25
)
_register_activation("tanh", "zero-centred, outputs in (-1,1), saturates at both ends", torch.tanh, lambda y: 1 - y * y)
_register_activation(
    "relu", "max(0,x): no saturation for x>0, dead (zero gradient) for x<0", torch.relu, lambda y: (y > 0).to(y.dtype)
)
_register_activation(
    "leaky_relu",
    f"x for x>0, {LEAKY_SLOPE}x otherwise: never fully dead",
    lambda x: nn.functional.leaky_relu(x, LEAKY_SLOPE),
    lambda y: torch.where(y > 0, 1.0, LEAKY_SLOPE).to(y.dtype),
)
_register_activation(
    "elu",
    f"x for x>0, {ELU_ALPHA}(e^x-1) otherwise: saturates at -{ELU_ALPHA} for large negative x",
    lambda x: nn.functional.elu(x, ELU_ALPHA),
    lambda y: torch.where(y > 0, torch.ones_like(y), y + ELU_ALPHA),
)
_register_activation(
    "sigmoid_centered",
    "sigmoid(x)-0.5: the sigmoid's shape, zero-centred",
    lambda x: torch.sigmoid(x) - 0.5,
    lambda y: (y + 0.5) * (0.5 - y),
    0.25,
)


# ============================== initialisations ==============================
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


# ============================== optimizers ==============================
# Each builder takes (params, cfg) and returns a torch optimizer; constants are the
# standard ones from the papers/CS231n notes.
@OPTIMIZERS.register("sgd", "plain stochastic gradient descent: w -= lr * g")
def opt_sgd(params: Iterable, cfg):
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("momentum", "SGD with heavy-ball momentum (cfg.momentum, usually 0.9)")
def opt_momentum(params, cfg):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("nesterov", "SGD with Nesterov momentum: gradient taken at the look-ahead point")
def opt_nesterov(params, cfg):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adagrad", "per-parameter lr / sqrt(sum of all squared gradients so far)")
def opt_adagrad(params, cfg):
    return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-8)


@OPTIMIZERS.register("rmsprop", "per-parameter lr / sqrt(moving average of squared gradients), decay 0.99")
def opt_rmsprop(params, cfg):
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.99, eps=1e-8, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adam", "momentum + RMSProp with bias correction (betas cfg.momentum, 0.999)")
def opt_adam(params, cfg):
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)


# ============================== schedules ==============================
# Each builder maps total_steps to a function step -> multiplier of the peak lr.
@SCHEDULES.register("constant", "the same learning rate throughout")
def sched_constant(total_steps: int) -> Callable[[int], float]:
    return lambda step: 1.0


@SCHEDULES.register("step", "x0.1 at 50% and again at 75% of training (the ResNet paper's recipe, compressed)")
def sched_step(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.1 ** ((step >= 0.5 * total_steps) + (step >= 0.75 * total_steps))


@SCHEDULES.register("cosine", "cosine decay from the peak to 0 over all steps (Loshchilov & Hutter 2017)")
def sched_cosine(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
