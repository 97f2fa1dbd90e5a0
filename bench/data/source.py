"""CIFAR-10 sources (torchvision's binary batches or an ImageFolder copy with its MANIFEST), decoded
once into a uint8 cache keyed by the data's identity; DataError for every user-facing data problem."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError

from .cache import atomic_save
from .cache import cache_dir as default_cache_dir

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# MANIFEST.tsv hash of the shared offline copy (see /work/shared/data/README.md).
SHARED_JPEG_SHA256 = "1ff432c949ef06747c1a698fc30fdf09fa8d5e35b206e74f7d6b1a2606121d2b"
# Bump when the cache layout or the decoder changes, so old caches are not reused.
CACHE_VERSION = "v1"  # v1: PIL decoder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BINARY_DIR = "cifar-10-batches-py"
BINARY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
DIR_HINT = (
    "set BENCH_DATA_DIR or pass --data-dir to a folder holding cifar-10-batches-py/ "
    "or train/<class>/ + test/<class>/ (e.g. ../shared/data/cifar10-jpeg)"
)


class DataError(BenchError):
    """User-facing data problem; message says what is wrong and how to fix it (the CLI prints it and exits 2)."""


@dataclass(frozen=True, eq=False)
class Cifar10:
    """The full data set as uint8 NCHW images and int64 labels."""

    train_x: torch.Tensor = field(repr=False)  # uint8 (50000, 3, 32, 32)
    train_y: torch.Tensor = field(repr=False)  # int64 (50000,)
    test_x: torch.Tensor = field(repr=False)  # uint8 (10000, 3, 32, 32)
    test_y: torch.Tensor = field(repr=False)  # int64 (10000,)
    classes: tuple[str, ...]
    source: str  # human name, e.g. "CIFAR-10 (JPEG q75 copy)"
    digest: str  # 16 hex chars identifying the data (not the path)
    path: str


# ---------------------------------------------------------------------------- loading


def load_cifar10(data_dir: str | None = None, cache_dir: str | None = None, download: bool = True) -> Cifar10:
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
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    if kind == "binary":
        files = [src / n for n in (*BINARY_TRAIN, "test_batch", "batches.meta")]
        for f in files:
            if not f.is_file():
                raise DataError(f"{f} is missing: delete {src} and let torchvision download it again, or {DIR_HINT}")
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
        source = "CIFAR-10 (JPEG q75 copy)" if digest == SHARED_JPEG_SHA256 else f"CIFAR-10 (ImageFolder {src})"
        want = manifest[1] if manifest is not None else None
        build = lambda: _read_image_folder(src, listing, want)  # noqa: E731

    digest = digest[:16]
    cache_file = cache_root / f"cifar10-{kind}-{digest}-{CACHE_VERSION}.pt"
    arrays = _read_cache(cache_file)
    if arrays is None:
        arrays = build()
        _write_cache(cache_file, arrays)
    return Cifar10(
        train_x=arrays["train_x"],
        train_y=arrays["train_y"],
        test_x=arrays["test_x"],
        test_y=arrays["test_y"],
        classes=tuple(arrays["classes"]),
        source=source,
        digest=digest,
        path=str(src.resolve()),
    )


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
        raise DataError(
            f"no CIFAR-10 in {root} and the torchvision download failed ({type(e).__name__}: {e});\n{DIR_HINT}"
        ) from None
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
            raise DataError(f"{src / name} is unreadable ({type(e).__name__}: {e}); delete {src} and download it again") from None

    train, test = [unpickle(n) for n in BINARY_TRAIN], unpickle("test_batch")
    return {
        "train_x": torch.cat([b["x"] for b in train]),
        "train_y": torch.cat([b["y"] for b in train]),
        "test_x": test["x"],
        "test_y": test["y"],
        **unpickle("batches.meta"),
    }


def _list_image_folder(root: Path) -> dict[str, dict[str, list[str]]]:
    """{split: {class: sorted file names}}; checks both splits have the same 10 classes."""
    listing: dict[str, dict[str, list[str]]] = {}
    for split in ("train", "test"):
        d = root / split
        if not d.is_dir():
            raise DataError(f"{d} is missing: an ImageFolder needs train/<class>/ and test/<class>/")
        listing[split] = {
            c.name: sorted(
                f.name for f in os.scandir(c) if not f.name.startswith(".") and f.name.lower().endswith(IMAGE_SUFFIXES)
            )
            for c in sorted(os.scandir(d), key=lambda e: e.name)
            if c.is_dir() and not c.name.startswith(".")
        }
    train, test = set(listing["train"]), set(listing["test"])
    for split, missing in (("train", (test - train)), ("test", (train - test))):
        if missing:
            raise DataError(
                f"{root / split / sorted(missing)[0]} is missing (it exists under the "
                f"other split); restore it or re-copy the data set"
            )
    if len(train) != 10:
        absent = [c for c in CIFAR10_CLASSES if c not in train]
        hint = f" (missing: {', '.join(absent)})" if len(train) < 10 and absent else ""
        raise DataError(
            f"{root / 'train'} has {len(train)} class folders, CIFAR-10 needs 10{hint}; restore them or re-copy the data set"
        )
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
            raise DataError(
                f"{root / key[0] / key[1]} has {got or 0} images but "
                f"{root / 'MANIFEST.tsv'} says {want or 0}: the copy is incomplete "
                f"or altered; re-copy the data set"
            )


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
            raise DataError(f"{path} is unreadable or truncated ({e}); replace it from a fresh copy of the data set") from None
        if img.shape != (3, 32, 32):
            raise DataError(f"{path} is {tuple(img.shape[1:])} pixels, CIFAR-10 images are 32x32; this is not CIFAR-10 data")
        xs[i] = img
    if want_sha is not None and h.hexdigest() != want_sha:
        raise DataError(
            f"{root} does not match {root / 'MANIFEST.tsv'} (sha256 {h.hexdigest()[:16]}... "
            f"vs {want_sha[:16]}...): a file was altered; re-copy the data set"
        )
    n = sum(r.startswith("train/") for r in rels)
    # Clones: torch.save writes a view's whole storage, which would double the cache file.
    return {
        "train_x": xs[:n].clone(),
        "train_y": ys[:n].clone(),
        "test_x": xs[n:].clone(),
        "test_y": ys[n:].clone(),
        "classes": classes,
    }


def _read_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, weights_only=True)
        ok = (
            d["train_x"].dtype == torch.uint8
            and d["train_x"].shape[1:] == (3, 32, 32)
            and len(d["train_x"]) == len(d["train_y"])
            and len(d["test_x"]) == len(d["test_y"])
        )
    except Exception:
        ok = False
    if not ok:
        warnings.warn(f"ignoring unreadable data cache {path}; rebuilding it", stacklevel=2)
        return None
    return d


def _write_cache(path: Path, arrays: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(arrays, path)
    except OSError as e:
        warnings.warn(
            f"cannot write data cache in {path.parent} ({e}); set BENCH_CACHE_DIR "
            f"to a writable folder to avoid decoding on every run",
            stacklevel=2,
        )
