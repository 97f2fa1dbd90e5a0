"""Optimizer and learning-rate schedule registries.

Every optimizer keeps its learning rate and step count in device tensors and updates all its parameters with
foreach kernels, so a training step never reads a number back to the host and can be captured in a CUDA graph.
The formulas are PyTorch's own (torch.optim's SGD, Adagrad, RMSprop, Adam with L2 weight decay), checked step by
step against torch.optim in tests/test_optim.py: torch.optim's SGD and Adagrad turn a tensor learning rate into a
host number every step (a device sync) and Adagrad has no capturable mode, hence these few lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from bench.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")
EPS = 1e-8  # added to the root of the squared-gradient statistic (AdaGrad, RMSProp, Adam)
RMSPROP_ALPHA = 0.99  # RMSProp's moving-average decay (PyTorch's default and Hinton's lecture value)
ADAM_BETA2 = 0.999  # Adam's second-moment decay (Kingma & Ba 2015)


class Optimizer:
    """Updates `params` from their `.grad` (parameters without a gradient this step are skipped, as torch.optim
    does). `lr` is a 0-d float32 tensor on the parameters' device: set it in place (`lr.copy_`) to schedule it.
    `stat_name` names the per-parameter squared-gradient statistic of adaptive methods (None for the SGD family);
    `state(p)` returns a parameter's state tensors by name."""

    stat_name: str | None = None

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float):
        self.params = [p for p in params if p.requires_grad]
        device = self.params[0].device if self.params else torch.device("cpu")
        self.lr = torch.tensor(float(lr), dtype=torch.float32, device=device)
        self.steps = torch.zeros((), dtype=torch.float32, device=device)  # updates made so far
        self.weight_decay = weight_decay
        self.buffers: dict[str, list[torch.Tensor]] = {}

    def _buffer(self, name: str) -> list[torch.Tensor]:
        """Zero-initialised state, one tensor per parameter, made now (before any step or graph capture)."""
        self.buffers[name] = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        return self.buffers[name]

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        for i, p in enumerate(self.params):
            if p is param:
                return {name: bufs[i] for name, bufs in self.buffers.items()}
        return {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [self.params[i].grad for i in live]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        self.steps.add_(1)
        self.update(live, params, grads)

    def update(self, live: list[int], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _pick(self, name: str, live: list[int]) -> list[torch.Tensor]:
        return [self.buffers[name][i] for i in live]

    def _descend(self, params: list[torch.Tensor], directions: list[torch.Tensor]) -> None:
        """params -= lr * direction, with lr the device tensor: 0-d, or of a shape that broadcasts against each
        parameter (one learning rate per row: bench.study.extras steps a batch of paths at once)."""
        if self.lr.dim():
            torch._foreach_sub_(params, [d * self.lr for d in directions])
        else:
            torch._foreach_sub_(params, torch._foreach_mul(directions, self.lr))


class SGD(Optimizer):
    """w -= lr * g; with momentum (heavy ball, dampening 0): b = m b + g, w -= lr * b; Nesterov: w -= lr (g + m b).
    The momentum buffer starts at zero, which equals torch.optim's first-step copy of g exactly."""

    def __init__(self, params, lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr, weight_decay)
        self.momentum, self.nesterov = momentum, nesterov
        if momentum:
            self._buffer("momentum_buffer")

    def update(self, live, params, grads):
        if not self.momentum:
            self._descend(params, grads)
            return
        bufs = self._pick("momentum_buffer", live)
        torch._foreach_mul_(bufs, self.momentum)
        torch._foreach_add_(bufs, grads)
        self._descend(params, torch._foreach_add(grads, bufs, alpha=self.momentum) if self.nesterov else bufs)


class Adagrad(Optimizer):
    """s += g^2; w -= lr * g / (sqrt(s) + eps) (Duchi et al. 2011; torch.optim.Adagrad with lr_decay 0)."""

    stat_name = "sum"

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, lr, weight_decay)
        self._buffer("sum")

    def update(self, live, params, grads):
        sums = self._pick("sum", live)
        torch._foreach_addcmul_(sums, grads, grads, value=1.0)
        self._descend(params, torch._foreach_div(grads, torch._foreach_add(torch._foreach_sqrt(sums), EPS)))


class RMSprop(Optimizer):
    """v = a v + (1 - a) g^2; w -= lr * g / (sqrt(v) + eps) (Tieleman & Hinton 2012; torch.optim.RMSprop)."""

    stat_name = "square_avg"

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, lr, weight_decay)
        self._buffer("square_avg")

    def update(self, live, params, grads):
        avg = self._pick("square_avg", live)
        torch._foreach_mul_(avg, RMSPROP_ALPHA)
        torch._foreach_addcmul_(avg, grads, grads, value=1 - RMSPROP_ALPHA)
        self._descend(params, torch._foreach_div(grads, torch._foreach_add(torch._foreach_sqrt(avg), EPS)))


class Adam(Optimizer):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)
    (Kingma & Ba 2015; torch.optim.Adam with L2 weight decay); t counts each parameter's own updates, on the device."""

    stat_name = "exp_avg_sq"

    def __init__(self, params, lr: float, weight_decay: float, beta1: float):
        super().__init__(params, lr, weight_decay)
        self.beta1 = beta1
        self._buffer("exp_avg")
        self._buffer("exp_avg_sq")
        self.counts = [torch.zeros((), dtype=torch.float32, device=self.lr.device) for _ in self.params]

    def update(self, live, params, grads):
        m, v = self._pick("exp_avg", live), self._pick("exp_avg_sq", live)
        t = [self.counts[i] for i in live]
        torch._foreach_add_(t, 1.0)
        torch._foreach_lerp_(m, grads, 1 - self.beta1)
        torch._foreach_mul_(v, ADAM_BETA2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - ADAM_BETA2)
        correction1 = torch._foreach_add(torch._foreach_neg(torch._foreach_pow(self.beta1, t)), 1.0)  # 1 - b1^t, per parameter
        root2 = torch._foreach_sqrt(torch._foreach_add(torch._foreach_neg(torch._foreach_pow(ADAM_BETA2, t)), 1.0))
        denom = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(v), root2), EPS)
        self._descend(params, torch._foreach_div(torch._foreach_div(m, denom), correction1))


@OPTIMIZERS.register("sgd", "plain stochastic gradient descent: w -= lr * g")
def opt_sgd(params: Iterable, cfg) -> Optimizer:
    return SGD(params, cfg.lr, cfg.weight_decay)


@OPTIMIZERS.register("momentum", "SGD with heavy-ball momentum (cfg.momentum, usually 0.9)")
def opt_momentum(params, cfg) -> Optimizer:
    return SGD(params, cfg.lr, cfg.weight_decay, momentum=cfg.momentum)


@OPTIMIZERS.register("nesterov", "SGD with Nesterov momentum: gradient taken at the look-ahead point")
def opt_nesterov(params, cfg) -> Optimizer:
    return SGD(params, cfg.lr, cfg.weight_decay, momentum=cfg.momentum, nesterov=True)


@OPTIMIZERS.register("adagrad", "per-parameter lr / sqrt(sum of all squared gradients so far)")
def opt_adagrad(params, cfg) -> Optimizer:
    return Adagrad(params, cfg.lr, cfg.weight_decay)


@OPTIMIZERS.register("rmsprop", f"per-parameter lr / sqrt(moving average of squared gradients), decay {RMSPROP_ALPHA}")
def opt_rmsprop(params, cfg) -> Optimizer:
    return RMSprop(params, cfg.lr, cfg.weight_decay)


@OPTIMIZERS.register("adam", f"momentum + RMSProp with bias correction (betas cfg.momentum, {ADAM_BETA2})")
def opt_adam(params, cfg) -> Optimizer:
    return Adam(params, cfg.lr, cfg.weight_decay, beta1=cfg.momentum)


# ============================== schedules ==============================
# Each builder maps total_steps to a function step -> multiplier of the peak lr; a trial turns it into a
# device table of every step's lr once, so the step reads its lr on the device.
@SCHEDULES.register("constant", "the same learning rate throughout")
def sched_constant(total_steps: int) -> Callable[[int], float]:
    return lambda step: 1.0


@SCHEDULES.register("step", "x0.1 at 50% and again at 75% of training (the ResNet paper's recipe, compressed)")
def sched_step(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.1 ** ((step >= 0.5 * total_steps) + (step >= 0.75 * total_steps))


@SCHEDULES.register("cosine", "cosine decay from the peak to 0 over all steps (Loshchilov & Hutter 2017)")
def sched_cosine(total_steps: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


def lr_table(name: str, peak: float, total_steps: int, device: torch.device) -> torch.Tensor:
    """float32 (total_steps + 1,) on `device`: the learning rate of every step (index = steps taken before it)."""
    at = SCHEDULES.get(name)(total_steps)
    return torch.tensor([peak * at(s) for s in range(total_steps + 1)], dtype=torch.float32, device=device)
