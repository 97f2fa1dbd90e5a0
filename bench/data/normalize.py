"""Input normalisations, fitted on the training split only: a registry of builders from uint8 training
images to a Normalizer (uint8 batch -> float32 on the training device)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Protocol

import torch

from bench.registry import Registry

from .source import DataError


class Normalizer(Protocol):
    out_shape: tuple[int, ...]  # per-sample shape after transform, e.g. (3, 32, 32) or (k,)

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...  # (B,C,H,W) 0..255 -> float32

    def to(self, device: torch.device | str) -> Normalizer: ...


@dataclass(frozen=True, eq=False)
class ChannelAffine:
    """y = (x - shift) / scale with per-channel (C, 1, 1) shift and scale, in pixel units."""

    shift: torch.Tensor
    scale: torch.Tensor
    out_shape: tuple[int, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.shift) / self.scale

    def to(self, device: torch.device | str) -> ChannelAffine:
        return dataclasses.replace(self, shift=self.shift.to(device), scale=self.scale.to(device))


@dataclass(frozen=True, eq=False)
class Projection:
    """y = (flatten(x) - mean) @ matrix, reshaped to out_shape; mean in pixel units (D,)."""

    mean: torch.Tensor  # (D,) float32
    matrix: torch.Tensor  # (D, k) float32
    out_shape: tuple[int, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = (x.flatten(1).float() - self.mean) @ self.matrix
        return y.reshape(len(x), *self.out_shape)

    def to(self, device: torch.device | str) -> Projection:
        return dataclasses.replace(self, mean=self.mean.to(device), matrix=self.matrix.to(device))


NORMALIZATIONS = Registry("normalization")
# PCA/ZCA statistics come from at most this many training images: enough for a stable
# 3072x3072 covariance, and it keeps the float64 fit to a few seconds on CPU.
FIT_MAX_IMAGES = 10000
# Whitening regulariser, added to the eigenvalues of the covariance of unit-scaled ([0,1])
# pixels. On CIFAR-10 those run from ~68 down to ~1e-6 (median ~2e-5); 1e-2 whitens the
# ~500 directions above it and damps the rest (mostly JPEG/quantisation noise) instead
# of amplifying them up to 1000x. A common choice for full-image ZCA on [0,1] data.
WHITEN_EPS = 1e-2


def _const(x: torch.Tensor, shift: float, scale: float) -> ChannelAffine:
    c = x.shape[1]
    return ChannelAffine(torch.full((c, 1, 1), shift), torch.full((c, 1, 1), scale), tuple(x.shape[1:]))


NORMALIZATIONS.register("raw", "float pixels 0..255, no scaling")(lambda train_x, pca_k=0: _const(train_x, 0.0, 1.0))
NORMALIZATIONS.register("unit", "pixels / 255, in [0, 1]")(lambda train_x, pca_k=0: _const(train_x, 0.0, 255.0))
NORMALIZATIONS.register("symmetric", "pixels / 127.5 - 1, in [-1, 1]")(lambda train_x, pca_k=0: _const(train_x, 127.5, 127.5))


@NORMALIZATIONS.register("standardize", "per-channel mean 0, std 1 (train statistics)")
def standardize(train_x: torch.Tensor, pca_k: int = 0) -> Normalizer:
    # Float64 sums over chunks: a float64 copy of 45k images would need 1.1 GB.
    total = torch.zeros(train_x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for chunk in train_x.split(4096):
        c = chunk.transpose(0, 1).reshape(len(total), -1).double()  # (C, chunk*H*W)
        total += c.sum(1)
        total_sq += (c * c).sum(1)
    count = train_x[:, 0].numel()
    mean = total / count
    # Clamp: a constant channel would otherwise divide by zero.
    std = (total_sq / count - mean**2).clamp_min(0).sqrt().clamp_min(1e-6)
    return ChannelAffine(mean.float()[:, None, None], std.float()[:, None, None], tuple(train_x.shape[1:]))


# The last eigendecomposition fitted, by a digest of the images it was fitted on: every trial of a profile trains on
# the same split (split seed 0), so each PCA/ZCA arm after the first in a process reuses it instead of another
# covariance and eigh (seconds each on a CPU; the float64 basis it keeps is 75 MB at 3072 dimensions).
_last_eig: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _eig(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean (D,) pixel units, eigenvalues (D,) descending, eigenvectors (D, D) as columns).

    Eigenvalues are of the covariance of unit-scaled pixels (x / 255), in float64. The tensors returned may be
    the ones an earlier call returned (see _last_eig): read them, do not change them in place.
    """
    n = len(train_x)
    if n > FIT_MAX_IMAGES:  # fixed seed: the same subsample on every run
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:FIT_MAX_IMAGES]
        train_x = train_x[keep.sort().values]
    images = train_x.contiguous().cpu()
    digest = hashlib.blake2b(images.numpy(), digest_size=16)
    digest.update(f"{images.dtype} {tuple(images.shape)}".encode())
    key = digest.hexdigest()
    if key not in _last_eig:
        _last_eig.clear()
        _last_eig[key] = _fit_eig(images)
    return _last_eig[key]


def _fit_eig(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = train_x.flatten(1).double() / 255.0
    mean = x.mean(0)
    x -= mean
    cov = x.T @ x / max(len(x) - 1, 1)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    vals, vecs = vals.flip(0).clamp_min(0.0), vecs.flip(1)
    # Eigenvector signs are arbitrary; make each one's largest entry positive for reproducibility.
    sign = torch.sign(vecs.gather(0, vecs.abs().argmax(0, keepdim=True)))
    return mean * 255.0, vals, vecs * sign


def _check_k(train_x: torch.Tensor, pca_k: int) -> int:
    d = train_x[0].numel()
    if not isinstance(pca_k, int) or not 1 <= pca_k <= d:
        raise DataError(f"pca_k={pca_k!r} must be an integer in 1..{d} (the number of principal components kept), e.g. pca_k=256")
    return pca_k


@NORMALIZATIONS.register("pca", "project centred pixels onto the top pca_k principal components -> (pca_k,)")
def pca(train_x: torch.Tensor, pca_k: int = 0) -> Normalizer:
    k = _check_k(train_x, pca_k)
    mean, _, vecs = _eig(train_x)
    # Output in unit-pixel scale, like `unit`: fold the 1/255 into the matrix.
    return Projection(mean.float(), (vecs[:, :k] / 255.0).float(), (k,))


@NORMALIZATIONS.register("pca_whiten", f"pca, then each component / sqrt(eigenvalue + {WHITEN_EPS}) -> (pca_k,)")
def pca_whiten(train_x: torch.Tensor, pca_k: int = 0, eps: float = WHITEN_EPS) -> Normalizer:
    k = _check_k(train_x, pca_k)
    mean, vals, vecs = _eig(train_x)
    w = vecs[:, :k] / (vals[:k] + eps).sqrt() / 255.0
    return Projection(mean.float(), w.float(), (k,))


@NORMALIZATIONS.register("zca", f"ZCA whitening (eps {WHITEN_EPS} on [0,1] pixels), image-shaped output")
def zca(train_x: torch.Tensor, pca_k: int = 0, eps: float = WHITEN_EPS) -> Normalizer:
    mean, vals, vecs = _eig(train_x)
    # Whiten in the eigenbasis, then rotate back so the output still looks like an image.
    w = (vecs / (vals + eps).sqrt()) @ vecs.T / 255.0
    return Projection(mean.float(), w.float(), tuple(train_x.shape[1:]))


def fit_normalizer(name: str, train_x: torch.Tensor, pca_k: int = 0) -> Normalizer:
    """Fit normalisation `name` on training images only (uint8 (N, C, H, W)); see NORMALIZATIONS."""
    if name not in NORMALIZATIONS:
        raise DataError(f"unknown normalization {name!r}; valid: {', '.join(NORMALIZATIONS.names())}")
    return NORMALIZATIONS.get(name)(train_x, pca_k)
