"""CIFAR-10 loading and caching, train/val/test splits, input normalisations, augmentation.

Images stay uint8 NCHW (0..255) until a Normalizer turns a batch into float32 on the
training device, so the whole data set (60k x 3 x 32 x 32 = 184 MB) is cheap to keep.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.registry import Registry

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# MANIFEST.tsv hash of the shared offline copy (see /work/shared/data/README.md).
SHARED_JPEG_SHA256 = "1ff432c949ef06747c1a698fc30fdf09fa8d5e35b206e74f7d6b1a2606121d2b"
# Bump when the cache layout or the decoder changes, so old caches are not reused.
CACHE_VERSION = "v1"  # v1: PIL decoder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BINARY_DIR = "cifar-10-batches-py"
BINARY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
DIR_HINT = ("set BENCH_DATA_DIR or pass --data-dir to a folder holding cifar-10-batches-py/ "
            "or train/<class>/ + test/<class>/ (e.g. ../shared/data/cifar10-jpeg)")


class DataError(Exception):
    """User-facing data problem; message says what is wrong and how to fix it (the CLI prints it and exits 2)."""


@dataclass(frozen=True, eq=False)
class Cifar10:
    """The full data set as uint8 NCHW images and int64 labels."""

    train_x: torch.Tensor = field(repr=False)  # uint8 (50000, 3, 32, 32)
    train_y: torch.Tensor = field(repr=False)  # int64 (50000,)
    test_x: torch.Tensor = field(repr=False)   # uint8 (10000, 3, 32, 32)
    test_y: torch.Tensor = field(repr=False)   # int64 (10000,)
    classes: tuple[str, ...]
    source: str  # human name, e.g. "CIFAR-10 (JPEG q75 copy)"
    digest: str  # 16 hex chars identifying the data (not the path)
    path: str


# ---------------------------------------------------------------------------- loading

def load_cifar10(data_dir: str | None = None, cache_dir: str | None = None,
                 download: bool = True) -> Cifar10:
    """Load CIFAR-10 from `data_dir` / $BENCH_DATA_DIR / ./data, decoding once into a cache.

    Accepts torchvision's cifar-10-batches-py/ (downloaded if absent and `download`) or an
    ImageFolder train/<class>/*, test/<class>/* (verified against MANIFEST.tsv if present).
    """
    root = Path(data_dir or os.environ.get("BENCH_DATA_DIR") or "./data").expanduser()
    kind, src = _locate(root)
    if kind is None:
        if not download:
            raise DataError(f"no CIFAR-10 found in {root} (download disabled); {DIR_HINT}")
        kind, src = _download(root)
    cache_root = Path(cache_dir or os.environ.get("BENCH_CACHE_DIR")
                      or "~/.cache/ablation-bench").expanduser()

    if kind == "binary":
        files = [src / n for n in (*BINARY_TRAIN, "test_batch", "batches.meta")]
        for f in files:
            if not f.is_file():
                raise DataError(f"{f} is missing: delete {src} and let torchvision download "
                                f"it again, or {DIR_HINT}")
        # The six batch files are 178 MB: hashing them takes well under a second.
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
        digest, source = h.hexdigest(), "CIFAR-10 (torchvision binary)"
        build = lambda: _read_binary(src)  # noqa: E731
    else:
        listing = _list_image_folder(src)
        manifest = _read_manifest(src / "MANIFEST.tsv")
        if manifest is not None:
            _check_counts(src, listing, manifest[0])
            # Trust the manifest hash as the cache key; the 236 MB of files are only
            # re-hashed when the cache is built (a cached load must stay fast).
            digest = manifest[1] or _stat_fingerprint(src, listing)
        else:
            digest = _stat_fingerprint(src, listing)
        source = ("CIFAR-10 (JPEG q75 copy)" if digest == SHARED_JPEG_SHA256
                  else f"CIFAR-10 (ImageFolder {src})")
        want = manifest[1] if manifest is not None else None
        build = lambda: _read_image_folder(src, listing, want)  # noqa: E731

    digest = digest[:16]
    cache_file = cache_root / f"cifar10-{kind}-{digest}-{CACHE_VERSION}.pt"
    arrays = _read_cache(cache_file)
    if arrays is None:
        arrays = build()
        _write_cache(cache_file, arrays)
    return Cifar10(train_x=arrays["train_x"], train_y=arrays["train_y"],
                   test_x=arrays["test_x"], test_y=arrays["test_y"],
                   classes=tuple(arrays["classes"]), source=source, digest=digest,
                   path=str(src.resolve()))


def _locate(root: Path) -> tuple[str | None, Path]:
    """Which layout `root` holds: ("binary", batches dir), ("folder", root) or (None, root)."""
    if (root / "data_batch_1").is_file():
        return "binary", root
    if (root / BINARY_DIR).is_dir():
        return "binary", root / BINARY_DIR
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder", root
    return None, root


def _download(root: Path) -> tuple[str, Path]:
    import torchvision.datasets  # lazy: only needed without local data

    try:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # no network, read-only dir, bad archive: all the same fix
        raise DataError(f"no CIFAR-10 in {root} and the torchvision download failed "
                        f"({type(e).__name__}: {e});\n{DIR_HINT}") from None
    return "binary", root / BINARY_DIR


def _read_binary(src: Path) -> dict:
    """Read torchvision's pickled batches (dicts with b'data' (N, 3072) uint8 and b'labels')."""
    def unpickle(name: str) -> dict:
        try:
            with open(src / name, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            if name == "batches.meta":
                return {"classes": [c.decode() for c in d[b"label_names"]]}
            x = torch.as_tensor(d[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
            return {"x": x, "y": torch.as_tensor(d[b"labels"], dtype=torch.int64).reshape(len(x))}
        except Exception as e:
            raise DataError(f"{src / name} is unreadable ({type(e).__name__}: {e}); delete "
                            f"{src} and download it again") from None

    train, test = [unpickle(n) for n in BINARY_TRAIN], unpickle("test_batch")
    return {"train_x": torch.cat([b["x"] for b in train]), "train_y": torch.cat([b["y"] for b in train]),
            "test_x": test["x"], "test_y": test["y"], **unpickle("batches.meta")}


def _list_image_folder(root: Path) -> dict[str, dict[str, list[str]]]:
    """{split: {class: sorted file names}}; checks both splits have the same 10 classes."""
    listing: dict[str, dict[str, list[str]]] = {}
    for split in ("train", "test"):
        d = root / split
        if not d.is_dir():
            raise DataError(f"{d} is missing: an ImageFolder needs train/<class>/ and test/<class>/")
        listing[split] = {
            c.name: sorted(f.name for f in os.scandir(c) if not f.name.startswith(".")
                           and f.name.lower().endswith(IMAGE_SUFFIXES))
            for c in sorted(os.scandir(d), key=lambda e: e.name)
            if c.is_dir() and not c.name.startswith(".")}
    train, test = set(listing["train"]), set(listing["test"])
    for split, missing in (("train", (test - train)), ("test", (train - test))):
        if missing:
            raise DataError(f"{root / split / sorted(missing)[0]} is missing (it exists under the "
                            f"other split); restore it or re-copy the data set")
    if len(train) != 10:
        absent = [c for c in CIFAR10_CLASSES if c not in train]
        hint = f" (missing: {', '.join(absent)})" if len(train) < 10 and absent else ""
        raise DataError(f"{root / 'train'} has {len(train)} class folders, CIFAR-10 needs 10{hint}; "
                        f"restore them or re-copy the data set")
    for split, classes in listing.items():
        for c, names in classes.items():
            if not names:
                raise DataError(f"{root / split / c} holds no .jpg/.png images; re-copy it")
    return listing


def _read_manifest(path: Path) -> tuple[dict[tuple[str, str], int], str | None] | None:
    """Parse MANIFEST.tsv into ({(split, class): count}, sha256 hex or None); None if absent."""
    if not path.is_file():
        return None
    counts: dict[tuple[str, str], int] = {}
    sha = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#"):
            m = re.search(r"\b([0-9a-f]{64})\s*$", line)
            sha = m.group(1) if m else sha
        elif line.strip() and line.split("\t")[0] != "split":  # skip the header row
            parts = line.split("\t")
            if len(parts) != 3 or not parts[2].strip().isdigit():
                raise DataError(f"{path}:{n} is malformed ({line!r}); expected split<TAB>class<TAB>count")
            counts[(parts[0], parts[1])] = int(parts[2])
    return counts, sha


def _check_counts(root: Path, listing: dict, counts: dict[tuple[str, str], int]) -> None:
    found = {(s, c): len(names) for s, classes in listing.items() for c, names in classes.items()}
    for key in sorted(set(counts) | set(found)):
        want, got = counts.get(key), found.get(key)
        if want != got:
            raise DataError(f"{root / key[0] / key[1]} has {got or 0} images but "
                            f"{root / 'MANIFEST.tsv'} says {want or 0}: the copy is incomplete "
                            f"or altered; re-copy the data set")


def _stat_fingerprint(root: Path, listing: dict) -> str:
    """Cheap identity without a manifest: sha256 over sorted relative paths, sizes and mtimes."""
    h = hashlib.sha256()
    for rel in _relative_paths(listing):
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _relative_paths(listing: dict) -> Iterator[str]:
    # Split by split (train, then test), sorted within: the order MANIFEST.tsv hashes in.
    for split in ("train", "test"):
        for c in sorted(listing[split]):
            for name in listing[split][c]:
                yield f"{split}/{c}/{name}"


def _decode_image(path: Path, raw: bytes) -> torch.Tensor:
    """Decode one JPEG/PNG file's bytes to uint8 (3, H, W) RGB (~0.1 ms for 32x32).

    PIL rather than torchvision.io: the latter is deprecated in torchvision 0.29 and warns
    on every call. Both use libjpeg-turbo; their pixels agreed exactly on the shared copy.
    """
    with Image.open(io.BytesIO(raw)) as im:
        arr = np.asarray(im.convert("RGB"))  # raises OSError on truncated files
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def _read_image_folder(root: Path, listing: dict, want_sha: str | None) -> dict:
    """Decode every image (and, if `want_sha`, hash all bytes as MANIFEST.tsv does)."""
    classes = sorted(listing["train"])  # alphabetical = CIFAR-10's label order
    rels = list(_relative_paths(listing))
    xs = torch.empty((len(rels), 3, 32, 32), dtype=torch.uint8)
    ys = torch.tensor([classes.index(r.split("/")[1]) for r in rels], dtype=torch.int64)
    h = hashlib.sha256()
    for i, rel in enumerate(rels):
        path = root / rel
        raw = path.read_bytes()
        h.update(rel.encode())  # manifest recipe: path bytes, then file bytes, no separators
        h.update(raw)
        try:
            img = _decode_image(path, raw)
        except Exception as e:
            raise DataError(f"{path} is unreadable or truncated ({e}); "
                            f"replace it from a fresh copy of the data set") from None
        if img.shape != (3, 32, 32):
            raise DataError(f"{path} is {tuple(img.shape[1:])} pixels, CIFAR-10 images are "
                            f"32x32; this is not CIFAR-10 data")
        xs[i] = img
    if want_sha is not None and h.hexdigest() != want_sha:
        raise DataError(f"{root} does not match {root / 'MANIFEST.tsv'} (sha256 {h.hexdigest()[:16]}... "
                        f"vs {want_sha[:16]}...): a file was altered; re-copy the data set")
    n = sum(r.startswith("train/") for r in rels)
    # Clones: torch.save writes a view's whole storage, which would double the cache file.
    return {"train_x": xs[:n].clone(), "train_y": ys[:n].clone(), "test_x": xs[n:].clone(),
            "test_y": ys[n:].clone(), "classes": classes}


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, weights_only=True)
        ok = (d["train_x"].dtype == torch.uint8 and d["train_x"].shape[1:] == (3, 32, 32)
              and len(d["train_x"]) == len(d["train_y"]) and len(d["test_x"]) == len(d["test_y"]))
    except Exception:
        ok = False
    if not ok:
        warnings.warn(f"ignoring unreadable data cache {path}; rebuilding it")
        return None
    return d


def _write_cache(path: Path, arrays: dict) -> None:
    # Temp file + os.replace: a concurrent reader sees the old file or the whole new one.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        warnings.warn(f"cannot write data cache in {path.parent} ({e}); set BENCH_CACHE_DIR "
                      f"to a writable folder to avoid decoding on every run")
        return
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(arrays, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared BENCH_CACHE_DIR needs readable files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ----------------------------------------------------------------------------- splits

@dataclass(frozen=True, eq=False)
class Splits:
    """Train/val/test tensors; the *_idx fields index data.train_x (train, val) / data.test_x."""

    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    train_idx: torch.Tensor | None = field(default=None, repr=False)
    val_idx: torch.Tensor | None = field(default=None, repr=False)
    test_idx: torch.Tensor | None = field(default=None, repr=False)


def make_splits(data: Cifar10, n_train: int = 0, n_val: int = 5000, n_test: int = 0,
                split_seed: int = 0) -> Splits:
    """Carve a class-balanced validation set from train; optionally subsample train and test.

    Only `split_seed` decides which images go where; sizes must be multiples of the class
    count (n/10 per class; 0 = all remaining). Validation does not depend on n_train, and a
    smaller n_train is a subset of a larger one with the same seed.
    """
    k = len(data.classes)
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 0 or n % k:
            raise DataError(f"{name}={n} must be a non-negative multiple of {k} (class-balanced "
                            f"splits take {name}/{k} images per class); e.g. {name}={n // k * k}")
    val, train = _balanced(data, data.train_y, split_seed, [("n_val", n_val), ("n_train", n_train or None)])
    test = (_balanced(data, data.test_y, split_seed, [("n_test", n_test)])[0] if n_test
            else torch.arange(len(data.test_y)))
    return Splits(data.train_x[train], data.train_y[train], data.train_x[val], data.train_y[val],
                  data.test_x[test], data.test_y[test], train, val, test)


def _balanced(data: Cifar10, y: torch.Tensor, seed: int,
              sizes: list[tuple[str, int | None]]) -> list[torch.Tensor]:
    """Per class, shuffle (seeded) and cut consecutive chunks of n/k; n=None takes the rest.

    Returns one sorted index tensor per (name, n) in `sizes`.
    """
    k, g = len(data.classes), torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in sizes]
    for c in range(k):
        idx = torch.nonzero(y == c).flatten()
        idx, start = idx[torch.randperm(len(idx), generator=g)], 0
        for part, (name, n) in zip(parts, sizes):
            take = len(idx) - start if n is None else n // k
            if start + take > len(idx):
                raise DataError(f"{name}={n} needs {take} images per class but only {len(idx) - start} "
                                f"of class {data.classes[c]!r} are left; use {name} <= "
                                f"{(len(idx) - start) * k} or 0 (all)")
            part.append(idx[start:start + take])
            start += take
    return [torch.cat(p).sort().values for p in parts]


# --------------------------------------------------------------------- normalisations

class Normalizer(Protocol):
    out_shape: tuple[int, ...]  # per-sample shape after transform, e.g. (3, 32, 32) or (k,)

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...  # (B,C,H,W) 0..255 -> float32

    def to(self, device: torch.device | str) -> "Normalizer": ...


@dataclass(frozen=True, eq=False)
class ChannelAffine:
    """y = (x - shift) / scale with per-channel (C, 1, 1) shift and scale, in pixel units."""

    shift: torch.Tensor
    scale: torch.Tensor
    out_shape: tuple[int, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.shift) / self.scale

    def to(self, device: torch.device | str) -> "ChannelAffine":
        return dataclasses.replace(self, shift=self.shift.to(device), scale=self.scale.to(device))


@dataclass(frozen=True, eq=False)
class Projection:
    """y = (flatten(x) - mean) @ matrix, reshaped to out_shape; mean in pixel units (D,)."""

    mean: torch.Tensor    # (D,) float32
    matrix: torch.Tensor  # (D, k) float32
    out_shape: tuple[int, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = (x.flatten(1).float() - self.mean) @ self.matrix
        return y.reshape(len(x), *self.out_shape)

    def to(self, device: torch.device | str) -> "Projection":
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


NORMALIZATIONS.register("raw", "float pixels 0..255, no scaling")(
    lambda train_x, pca_k=0: _const(train_x, 0.0, 1.0))
NORMALIZATIONS.register("unit", "pixels / 255, in [0, 1]")(
    lambda train_x, pca_k=0: _const(train_x, 0.0, 255.0))
NORMALIZATIONS.register("symmetric", "pixels / 127.5 - 1, in [-1, 1]")(
    lambda train_x, pca_k=0: _const(train_x, 127.5, 127.5))


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


def _eig(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean (D,) pixel units, eigenvalues (D,) descending, eigenvectors (D, D) as columns).

    Eigenvalues are of the covariance of unit-scaled pixels (x / 255), in float64.
    """
    n = len(train_x)
    if n > FIT_MAX_IMAGES:  # fixed seed: the same subsample on every run
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:FIT_MAX_IMAGES]
        train_x = train_x[keep.sort().values]
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
        raise DataError(f"pca_k={pca_k!r} must be an integer in 1..{d} (the number of principal "
                        f"components kept), e.g. pca_k=256")
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


# ------------------------------------------------------------------ batches, augmentation

def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4,
            flip: bool = True) -> torch.Tensor:
    """Random crop from the zero-padded batch (offsets 0..2*pad px) and random horizontal flip.

    Each image of x (B, C, H, W) gets its own offsets/flip. Random numbers are drawn on the
    generator's device (default: x's device and its default generator) and moved to x's
    device, so a CPU generator works for a GPU batch and gives the same draws.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x.clone()
    b, _, h, w = x.shape
    dev = generator.device if generator is not None else x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    flipped = torch.randint(0, 2, (b,), generator=generator, device=dev).to(x.device).bool()
    if not flip:
        flipped.zero_()
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = oy[:, None] + torch.arange(h, device=x.device)               # (B, H)
    cols = torch.arange(w, device=x.device).expand(b, w)
    cols = torch.where(flipped[:, None], cols.flip(1), cols) + ox[:, None]  # (B, W)
    # Gather rows then columns: two cheap index_select-like ops, no loop over images.
    out = padded.gather(2, rows[:, None, :, None].expand(b, x.shape[1], h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, x.shape[1], h, w))


def iterate_batches(n: int, batch_size: int, generator: torch.Generator | None,
                    shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Yield int64 index tensors covering range(n) once (shuffled if asked); last batch may be short.

    Indices live on the generator's device (CPU when generator is None).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dev = generator.device if generator is not None else "cpu"
    order = (torch.randperm(n, generator=generator, device=dev) if shuffle
             else torch.arange(n, device=dev))
    yield from order.split(batch_size)


# --- canvas placement (localization) ---
# Each 32x32 image is resized (bilinear) to a random integer width and height and pasted at a
# random integer position on a larger square canvas. A placement is (x0, y0, w, h) in pixels:
# top-left corner and size. The box a model regresses is (cx, cy, w, h) in canvas units (0..1),
# cx, cy being the box centre. Inside the box the canvas holds the resized image, outside it the
# background, exactly (tests/test_localization.py checks both).
CANVAS_SIDE = (0.25, 0.75)  # pasted width and height as fractions of the canvas side (16..48 px on 64)
CANVAS_ASPECT = (4, 3)  # a pasted image's longer side is at most 4/3 of its shorter side
CANVAS_GREY = 128  # the plain background's value, every channel
# Evaluation placements come from these seeds, never the trial's: every trial sees the same
# validation and test canvases. Placements are drawn for the whole source array (50,000 training
# or 10,000 test images) and indexed by image, so an image's placement does not depend on n_train/n_test.
PLACEMENT_SEEDS = {"train": 1000, "val": 1001, "test": 1002}


def side_range(canvas: int) -> tuple[int, int]:
    """(smallest, largest) pasted width/height in pixels on a `canvas`-pixel canvas."""
    return max(1, round(CANVAS_SIDE[0] * canvas)), min(canvas, round(CANVAS_SIDE[1] * canvas))


def draw_placements(n: int, canvas: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n random placements, int64 (n, 4) = (x0, y0, w, h) in pixels, on the generator's device.

    w is uniform over side_range(canvas); h uniform over the sizes in that range within the
    aspect limit of w; the position uniform over those that keep the whole image on the canvas.
    """
    lo, hi = side_range(canvas)
    big, small = CANVAS_ASPECT
    dev = generator.device if generator is not None else "cpu"
    w = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)
    h_lo = torch.clamp((small * w + big - 1) // big, min=lo)  # ceil(w * 3/4), integer exact
    h_hi = torch.clamp(big * w // small, max=hi)               # floor(w * 4/3)
    u = torch.rand((n, 3), generator=generator, device=dev, dtype=torch.float64)
    h = h_lo + (u[:, 0] * (h_hi - h_lo + 1)).long()
    x0 = (u[:, 1] * (canvas - w + 1)).long()
    y0 = (u[:, 2] * (canvas - h + 1)).long()
    return torch.stack([x0, y0, w, h], 1)


def placement_boxes(placements: torch.Tensor, canvas: int) -> torch.Tensor:
    """float32 (n, 4) boxes (cx, cy, w, h) in canvas units from pixel placements (x0, y0, w, h)."""
    p = placements.float()
    return torch.stack([p[:, 0] + p[:, 2] / 2, p[:, 1] + p[:, 3] / 2, p[:, 2], p[:, 3]], 1) / canvas


def paste(x: torch.Tensor, placements: torch.Tensor, canvas: int, background: str = "plain",
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Paste uint8 images x (B, C, H, W) onto uint8 canvases (B, C, canvas, canvas) at `placements`.

    One grid_sample for the whole batch: inside its box a canvas pixel samples the image at the
    coordinate F.interpolate(..., mode="bilinear", align_corners=False) uses for a resize to
    (h, w); outside, the background: mid-grey (plain) or uniform 0..255 noise drawn per pixel
    from `generator` (noise).
    """
    b, c = x.shape[:2]
    p = placements.to(x.device).float()
    pix = torch.arange(canvas, device=x.device, dtype=torch.float32) + 0.5  # pixel centres
    gx = 2 * (pix[None, :] - p[:, 0:1]) / p[:, 2:3] - 1  # (B, canvas): -1..1 across the box
    gy = 2 * (pix[None, :] - p[:, 1:2]) / p[:, 3:4] - 1
    grid = torch.stack([gx[:, None, :].expand(b, canvas, canvas), gy[:, :, None].expand(b, canvas, canvas)], -1)
    img = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    img = img.round().clamp(0, 255).to(torch.uint8)
    inside = ((gx.abs() < 1)[:, None, :] & (gy.abs() < 1)[:, :, None])[:, None]  # (B, 1, canvas, canvas)
    if background == "noise":
        dev = generator.device if generator is not None else x.device
        back = torch.randint(0, 256, (b, c, canvas, canvas), generator=generator, device=dev, dtype=torch.uint8).to(x.device)
    elif background == "plain":
        back = torch.full((1, 1, 1, 1), CANVAS_GREY, dtype=torch.uint8, device=x.device)
    else:
        raise ValueError(f"unknown background {background!r}; valid: plain, noise")
    return torch.where(inside, img, back)


def place_on_canvas(x: torch.Tensor, canvas: int, background: str = "plain",
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh random placements for a batch (training: new ones every epoch): (canvases, boxes)."""
    placements = draw_placements(len(x), canvas, generator)
    return paste(x, placements, canvas, background, generator), placement_boxes(placements, canvas).to(x.device)


def fixed_canvases(x: torch.Tensor, index: torch.Tensor, n_source: int, split: str, canvas: int,
                   background: str = "plain", chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed canvases of `split` ("train", "val" or "test") for images x = source[index].

    Placements are drawn for all `n_source` images of the source array with PLACEMENT_SEEDS[split]
    and picked by `index`; a noise background is drawn from the same seed, in the order of x.
    Returns (uint8 canvases (N, C, canvas, canvas), float32 boxes (N, 4)) on x's device.
    """
    gen = torch.Generator().manual_seed(PLACEMENT_SEEDS[split])
    placements = draw_placements(n_source, canvas, gen)[index.cpu()]
    out = torch.empty((len(x), x.shape[1], canvas, canvas), dtype=torch.uint8, device=x.device)
    for start in range(0, len(x), chunk):
        part = slice(start, start + chunk)
        out[part] = paste(x[part], placements[part], canvas, background, gen)
    return out, placement_boxes(placements, canvas).to(x.device)


# --- class subsets (transfer) ---
# A transfer study trains a source model on some classes and a target model on the others.
# These splits hold only the chosen classes, with labels renumbered 0..k-1 in the order given.

def class_subset_splits(data: Cifar10, classes: tuple[int, ...], per_class: int = 0, n_val: int = 0,
                        n_test: int = 0, split_seed: int = 0) -> Splits:
    """Class-balanced splits of `classes` only, labels remapped to 0..len(classes)-1.

    Per class: n_val/k validation images carved from the training images first (fixed by
    `split_seed`, whatever per_class is), then `per_class` training images from the rest (0 = all
    of the rest; a smaller per_class is a subset of a larger one); n_test/k test images
    (n_test=0: all of the class's test images). k = len(classes). The *_idx fields index
    data.train_x / data.test_x, as in make_splits.
    """
    k = len(classes)
    if k == 0 or len(set(classes)) != k or not all(0 <= c < len(data.classes) for c in classes):
        raise DataError(f"classes {classes} must be distinct class numbers in 0..{len(data.classes) - 1}")
    for name, n in (("n_val", n_val), ("n_test", n_test)):
        if n < 0 or n % k:
            raise DataError(f"{name}={n} must be a non-negative multiple of {k} (the classes used) to "
                            f"split evenly; e.g. {name}={n // k * k}")
    if per_class < 0:
        raise DataError(f"per_class={per_class} must be >= 0 (0 = every training image left after validation)")
    g = torch.Generator().manual_seed(split_seed)
    val, train, test = [], [], []
    for c in classes:
        idx = torch.nonzero(data.train_y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        left = len(idx) - n_val // k
        if left < max(per_class, 1):
            raise DataError(f"class {data.classes[c]!r} has {len(idx)} training images: {n_val // k} for validation "
                            f"leave {max(left, 0)}, fewer than per_class={per_class}; lower per_class or n_val")
        val.append(idx[: n_val // k])
        train.append(idx[n_val // k: n_val // k + (per_class or left)])
        tidx = torch.nonzero(data.test_y == c).flatten()
        if n_test // k > len(tidx):
            raise DataError(f"n_test={n_test} needs {n_test // k} test images of class {data.classes[c]!r}, "
                            f"it has {len(tidx)}; use n_test <= {len(tidx) * k} or 0 (all)")
        test.append(tidx[torch.randperm(len(tidx), generator=g)[: n_test // k]] if n_test else tidx)
    remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
    remap[list(classes)] = torch.arange(k)
    tr, va, te = (torch.cat(p).sort().values for p in (train, val, test))
    return Splits(data.train_x[tr], remap[data.train_y[tr]], data.train_x[va], remap[data.train_y[va]],
                  data.test_x[te], remap[data.test_y[te]], tr, va, te)
