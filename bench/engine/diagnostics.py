"""Per-layer diagnostics measured on a fixed probe batch: activation statistics,
saturation, dead units, gradient norms, same-sign inputs, histograms, and end-of-run
structure checks (distinct units, linear collapse, effective learning rates)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .activations import Activation, profile, saturated
from .models import Dropout, activation_layers, weight_layers
from .optim import Adagrad, Optimizer

HIST_BINS = 40  # bins of the per-layer activation histograms


def _histogram(y: torch.Tensor, act: Activation) -> tuple[list[float], list[int]]:
    """40-bin histogram over the activation's output range when it is bounded (sigmoid, tanh), else the data's."""
    lo, hi = profile(act.name).bounds or (float(y.min()), float(y.max()))
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [], []
    if hi <= lo:
        hi = lo + 1e-6
    counts = torch.histc(y.float(), HIST_BINS, lo, hi)
    edges = torch.linspace(lo, hi, HIST_BINS + 1)
    return [round(float(e), 6) for e in edges], [int(c) for c in counts]


def probe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, histograms: bool = False, seed: int = 0) -> dict:
    """Forward+backward the probe batch in training mode without changing the model or the trial's randomness.

    BatchNorm uses the probe's batch statistics (as in training) but its running averages are left untouched;
    dropout draws its masks from a generator of the probe's own, seeded with `seed` at every call (the same masks
    every epoch, whether the trial trains alone or in a pack; the trial's generator and the global RNG are not
    touched); the parameters' gradients are put back
    as they were (a captured CUDA graph keeps writing into them). Saturation and dead units come from each
    activation's derivative at its inputs (autograd). Returns flat metrics: `<layer>.<stat>` for activations
    (Axx) and weight layers (Lxx).
    """
    acts, inputs, hooks = {}, {}, []
    for name, mod in activation_layers(model):
        hooks.append(mod.register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, (m, i[0].detach(), o.detach()))))
    for name, mod in weight_layers(model):
        if isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_pre_hook(lambda m, i, name=name: inputs.__setitem__(name, i[0].detach())))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    drops = [m for m in model.modules() if isinstance(m, Dropout)]
    generators = [m.generator for m in drops]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    weights = {name: m.weight for name, m in weight_layers(model)}
    was_training = model.training
    masks = torch.Generator(device=x.device).manual_seed(seed)
    try:
        for m in bns:
            m.momentum = 0.0  # running = (1-0)*running + 0*batch: unchanged
        for m in drops:
            m.generator = masks
        model.train()
        for p in params:
            p.grad = None
        loss = nn.functional.cross_entropy(model(x).float(), y)
        trainable = {name: w for name, w in weights.items() if w.requires_grad}  # frozen layers: no gradient, norm 0
        probe_grads = dict(zip(trainable, torch.autograd.grad(loss, list(trainable.values()), allow_unused=True)))
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        for m, g in zip(drops, generators):
            m.generator = g
        for p, g in zip(params, grads):
            p.grad = g
        for h in hooks:
            h.remove()
        model.train(was_training)
    out: dict = {"probe_loss": float(loss.detach())}
    for name, (act, inp, o) in acts.items():
        o = o.float()
        sat = saturated(act, inp)
        units = sat.transpose(0, 1).reshape(sat.shape[1], -1) if sat.dim() > 1 else sat[None]
        out[f"{name}.act_mean"] = float(o.mean())
        out[f"{name}.act_std"] = float(o.std())
        out[f"{name}.saturated"] = float(sat.float().mean())  # fraction of unit activations with ~0 local gradient
        out[f"{name}.dead"] = float(units.all(dim=1).float().mean())  # units with ~0 gradient on every probe image
        if histograms:
            out[f"{name}.hist_edges"], out[f"{name}.hist_counts"] = _histogram(o, act)
    for name in weights:
        g = probe_grads.get(name)
        out[f"{name}.grad_norm"] = float(g.norm()) if g is not None else 0.0
        if name in inputs:  # per-example weight gradient of unit i is delta_i * input: one sign iff inputs share one
            a = inputs[name].flatten(1).float()
            nonzero = a != 0
            pos = ((a > 0) | ~nonzero).all(dim=1)
            neg = ((a < 0) | ~nonzero).all(dim=1)
            out[f"{name}.same_sign"] = float((pos | neg).float().mean())
    return out


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in weight_layers(model)}


def update_ratios(model: nn.Module, before: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """||W_after - W_before|| / ||W_before|| per weight layer (CS231n: about 1e-3 is healthy), as device tensors:
    measured right after a step without waiting for the device; read them at the epoch's end."""
    out = {}
    for name, m in weight_layers(model):
        w0 = before[name]
        out[f"{name}.update_ratio"] = (m.weight.detach() - w0).norm() / (w0.norm() + 1e-12)
    return out


def effective_lr(model: nn.Module, optimizer: Optimizer, lr: float) -> dict[str, float | None]:
    """Per-parameter step size lr/(sqrt(v)+eps) of adaptive optimizers, per weight layer (median) and overall
    (median and 10th/90th percentiles), at learning rate `lr`; the plain lr for the SGD family."""
    key = optimizer.stat_name
    layers = weight_layers(model)
    if key is not None and float(optimizer.steps) == 0:
        # Before the first step an adaptive optimizer has no statistics: nothing to report.
        return {**{f"{name}.eff_lr": None for name, _ in layers}, "eff_lr_median": None, "eff_lr_p10": None, "eff_lr_p90": None}
    out, everything = {}, []
    for name, m in layers:
        state = optimizer.state(m.weight)
        if key is None or key not in state:
            eff = torch.full((1,), lr)
        else:
            eff = (lr / (state[key].detach().float().sqrt() + 1e-8)).flatten().cpu()
        out[f"{name}.eff_lr"] = float(eff.median())
        everything.append(eff[torch.randperm(eff.numel(), generator=torch.Generator().manual_seed(0))[:20000]])
    allv = torch.cat(everything)
    out["eff_lr_median"] = float(allv.median())
    out["eff_lr_p10"], out["eff_lr_p90"] = (float(v) for v in torch.quantile(allv, torch.tensor([0.1, 0.9])))
    return out


def accumulated_vs_step(model: nn.Module, optimizer: Optimizer, lr: float, bins: int = 10) -> dict[str, list[float]]:
    """For AdaGrad: parameters binned by their accumulated squared gradient (deciles), with
    the mean accumulated gradient and mean effective step per bin (the per-parameter claim)."""
    if not isinstance(optimizer, Adagrad):
        return {}
    sums = torch.cat(
        [optimizer.state(m.weight)["sum"].flatten().cpu() for _, m in weight_layers(model) if optimizer.state(m.weight)]
    )
    order = sums.argsort()
    chunks = order.chunk(bins)
    acc = [float(sums[c].sqrt().mean()) for c in chunks]
    step = [float((lr / (sums[c].sqrt() + 1e-8)).mean()) for c in chunks]
    return {"adagrad.bin_sqrt_sum": acc, "adagrad.bin_eff_lr": step}


def distinct_units(model: nn.Module, rel_tol: float = 1e-4) -> dict[str, float]:
    """Number of distinct rows (hidden units) per weight layer, rows equal within rel_tol of
    the layer's largest weight; zero/constant init keeps every row identical."""
    out = {}
    for name, m in weight_layers(model)[:-1]:  # the output layer's rows are classes, not hidden units
        w = m.weight.detach().flatten(1).double().cpu()
        scale = float(w.abs().max()) * rel_tol + 1e-12
        out[f"{name}.distinct_units"] = float(torch.unique(torch.round(w / scale), dim=0).shape[0])
        out[f"{name}.units"] = float(w.shape[0])
    return out


def linear_collapse_error(model: nn.Module, x: torch.Tensor) -> float | None:
    """For an mlp with identity activations: compose every layer (eval mode) into one
    matrix A and bias b, and return max|f(x) - (A x + b)| / max|f(x)| on x. None otherwise."""
    acts = activation_layers(model)
    if not isinstance(model, nn.Sequential) or not acts or any(m.name != "identity" for _, m in acts):
        return None
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        flat = x.flatten(1).double()
        A = torch.eye(flat.shape[1], dtype=torch.float64, device=x.device)
        b = torch.zeros(flat.shape[1], dtype=torch.float64, device=x.device)
        for layer in model:
            if isinstance(layer, nn.Linear):
                W = layer.weight.double()
                A, b = W @ A, W @ b + (layer.bias.double() if layer.bias is not None else 0)
            elif isinstance(layer, nn.BatchNorm1d):
                s = layer.weight.double() / (layer.running_var.double() + layer.eps).sqrt()
                A, b = s[:, None] * A, s * (b - layer.running_mean.double()) + layer.bias.double()
            elif isinstance(layer, Dropout) and layer.mode == "classic":
                A, b = A * (1 - layer.p), b * (1 - layer.p)
        out = model(x).double()
        err = float((out - (flat @ A.T + b)).abs().max() / (out.abs().max() + 1e-12))
    model.train(was_training)
    return err
