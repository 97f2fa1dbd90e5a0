"""Model registry: mlp, cnn and the CIFAR ResNet of He et al. (2016), each taking
activation, init, batchnorm and dropout from the trial config."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from bench.registry import Registry

from .activations import ACTIVATIONS, Activation
from .inits import apply_init

MODELS = Registry("model")
NUM_CLASSES = 10


class Dropout(nn.Module):
    """Dropout with an explicit scaling rule, so the notes' variants can be compared.

    inverted: scale kept units by 1/(1-p) in training, identity at test (what frameworks do);
    classic:  no scaling in training, multiply by the keep probability 1-p at test;
    unscaled: no scaling anywhere (test-time activations are 1/(1-p) too large on average).
    """

    def __init__(self, p: float, mode: str = "inverted"):
        super().__init__()
        self.p, self.mode = p, mode
        # Masks come from this generator (the trial's, on its device: set by the engine) or, when None, from
        # the global RNG (packed trials under vmap draw one mask per trial from it).
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        if self.training:
            u = (
                torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
                if self.generator is not None
                else torch.rand_like(x)
            )
            keep = (u >= self.p).to(x.dtype)
            return x * keep / (1.0 - self.p) if self.mode == "inverted" else x * keep
        return x * (1.0 - self.p) if self.mode == "classic" else x

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class GlobalAvgPool(nn.Module):
    """Mean over the spatial positions, (B, C, H, W) -> (B, C, 1, 1): AdaptiveAvgPool2d(1) written as a
    plain reduction, which vmap (packed trials) batches without a slow fallback."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _act(cfg) -> nn.Module:
    return ACTIVATIONS.get(cfg.activation)()


@MODELS.register("mlp", "fully connected: depth hidden layers (default 3) of width units (default 256)")
def build_mlp(cfg, in_shape: tuple[int, ...]) -> nn.Module:
    depth, width = cfg.depth or 3, cfg.width or 256
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(in_shape)
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width, bias=not cfg.batchnorm))
        if cfg.batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers += [_act(cfg), Dropout(cfg.dropout, cfg.dropout_mode)]
        fan_in = width
    layers.append(nn.Linear(fan_in, NUM_CLASSES))
    return nn.Sequential(*layers)


@MODELS.register("linear", "a single linear layer + softmax: the linear classifier baseline (no hidden layers)")
def build_linear(cfg, in_shape: tuple[int, ...]) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), NUM_CLASSES))


def _conv_bn_act(cfg, c_in: int, c_out: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not cfg.batchnorm)]
    if cfg.batchnorm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [_act(cfg)]


@MODELS.register(
    "cnn",
    "small VGG-style net for quick runs: 3 stages (width, 2x, 4x channels; default 32) of depth convs (default 1), max-pool, linear head",
)
def build_cnn(cfg, in_shape: tuple[int, ...]) -> nn.Module:
    per_stage, width = cfg.depth or 1, cfg.width or 32
    layers: list[nn.Module] = []
    c_in = in_shape[0]
    for stage in range(3):
        c_out = width * 2**stage
        for _ in range(per_stage):
            layers += _conv_bn_act(cfg, c_in, c_out)
            c_in = c_out
        layers.append(nn.MaxPool2d(2))
    layers += [GlobalAvgPool(), nn.Flatten(), Dropout(cfg.dropout, cfg.dropout_mode), nn.Linear(c_in, NUM_CLASSES)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs; with `residual` the input is added back (option A: parameter-free
    shortcut, stride-2 subsampling and zero-padded channels, as in He et al.'s CIFAR nets)."""

    def __init__(self, cfg, c_in: int, c_out: int, stride: int):
        super().__init__()
        bn = cfg.batchnorm
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(c_out) if bn else nn.Identity()
        self.act1 = _act(cfg)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(c_out) if bn else nn.Identity()
        self.act2 = _act(cfg)
        self.residual, self.stride, self.pad = cfg.residual, stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        if self.residual:
            shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            if self.pad:
                shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            out = out + shortcut
        return self.act2(out)


@MODELS.register(
    "resnet", "CIFAR ResNet (He et al. 2016): depth 6n+2 (default 20), widths 16/32/64; residual=false gives the plain net"
)
def build_resnet(cfg, in_shape: tuple[int, ...]) -> nn.Module:
    depth, width = cfg.depth or 20, cfg.width or 16
    n = (depth - 2) // 6
    layers: list[nn.Module] = _conv_bn_act(cfg, in_shape[0], width)
    c_in = width
    for stage in range(3):
        c_out = width * 2**stage
        for block in range(n):
            layers.append(BasicBlock(cfg, c_in, c_out, stride=2 if stage > 0 and block == 0 else 1))
            c_in = c_out
    layers += [GlobalAvgPool(), nn.Flatten(), Dropout(cfg.dropout, cfg.dropout_mode), nn.Linear(c_in, NUM_CLASSES)]
    return nn.Sequential(*layers)


def build_model(cfg, in_shape: tuple[int, ...], generator: torch.Generator | None) -> nn.Module:
    """Build cfg.model for inputs of per-sample shape `in_shape` and initialise it with cfg.init."""
    if cfg.model not in ("mlp", "linear") and len(in_shape) != 3:
        raise ValueError(f"model {cfg.model} needs image inputs (C,H,W), got features of shape {in_shape}")
    model = MODELS.get(cfg.model)(cfg, in_shape)
    apply_init(model, cfg, generator)
    return model


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear/Conv layers in forward order, named L01, L02, ... for per-layer metrics."""
    mods = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return [(f"L{i + 1:02d}", m) for i, m in enumerate(mods)]


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Activation modules in forward order, named A01, A02, ..."""
    mods = [m for m in model.modules() if isinstance(m, Activation)]
    return [(f"A{i + 1:02d}", m) for i, m in enumerate(mods)]
