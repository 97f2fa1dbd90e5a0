"""Tests for bench.data: loading/caching, splits, normalisations, augmentation (CPU only)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import data as bd
from bench.data import NORMALIZATIONS, Cifar10, DataError, augment, fit_normalizer, load_cifar10, make_splits
from bench.data import normalize as bn
from bench.data import source as bs

CLASSES = bd.CIFAR10_CLASSES
SHARED = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg"


# ------------------------------------------------------------------ tiny data on disk


def write_folder(root: Path, n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict:
    """Random 32x32 PNGs (lossless, so pixels can be compared exactly) in ImageFolder layout."""
    rng = np.random.default_rng(seed)
    want = {}
    for split, n in (("train", n_train), ("test", n_test)):
        xs, ys = [], []
        for label, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i:04d}.png")
                xs.append(img.transpose(2, 0, 1))
                ys.append(label)
        want[split] = (torch.from_numpy(np.stack(xs)), torch.tensor(ys))
    return want


def write_manifest(root: Path, sha: str | None = None) -> str:
    """MANIFEST.tsv like the shared copy's: counts, then sha256 (train then test, sorted paths)."""
    h = hashlib.sha256()
    lines = ["split\tclass\tcount"]
    for split in ("train", "test"):
        for c in sorted(p.name for p in (root / split).iterdir()):
            lines.append(f"{split}\t{c}\t{len(list((root / split / c).iterdir()))}")
        for p in sorted((root / split).rglob("*.png")):
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    sha = sha or h.hexdigest()
    lines.append(f"# sha256 over sorted relative paths and bytes: {sha}")
    (root / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    return sha


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    return root, write_folder(root)


def test_image_folder_loads_exact_pixels_labels_and_classes(folder, tmp_path):
    root, want = folder
    d = load_cifar10(str(root), cache_dir=str(tmp_path / "cache"), download=False)
    assert d.classes == CLASSES
    assert d.train_x.shape == (30, 3, 32, 32) and d.test_x.shape == (20, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert torch.equal(d.train_x, want["train"][0]) and torch.equal(d.train_y, want["train"][1])
    assert torch.equal(d.test_x, want["test"][0]) and torch.equal(d.test_y, want["test"][1])
    assert d.source == f"CIFAR-10 (ImageFolder {root})" and len(d.digest) == 16
    assert d.path == str(root.resolve())


def test_env_var_selects_data_and_cache_dirs(folder, tmp_path, monkeypatch):
    root, _ = folder
    monkeypatch.setenv("BENCH_DATA_DIR", str(root))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "envcache"))
    d = load_cifar10(download=False)
    assert d.path == str(root.resolve()) and len(d.train_y) == 30
    assert len(list((tmp_path / "envcache").glob("cifar10-*.pt"))) == 1


def test_cache_is_reused_and_never_written_into_data_dir(folder, tmp_path, monkeypatch):
    root, _ = folder
    before = sorted(p for p in root.rglob("*"))
    first = load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)

    def broken(path, raw):
        raise AssertionError("decoded again although the cache exists")

    monkeypatch.setattr(bs, "_decode_image", broken)
    second = load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    assert torch.equal(first.train_x, second.train_x) and second.digest == first.digest
    assert sorted(p for p in root.rglob("*")) == before
    assert not list((tmp_path / "c").glob(".*tmp"))  # temp file renamed, not left behind


def test_changed_file_without_manifest_changes_identity(folder, tmp_path):
    root, _ = folder
    first = load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(root / "train/cat/0001.png")
    os.utime(root / "train/cat/0001.png", ns=(1, 1))  # mtime surely differs from the first
    second = load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    assert second.digest != first.digest
    assert int(second.train_x[3 * 3 + 1].max()) == 0  # cat is label 3, image 1 now black


def test_manifest_verified_and_used_as_identity(folder, tmp_path):
    root, _ = folder
    sha = write_manifest(root)
    d = load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    assert d.digest == sha[:16]


def test_manifest_hash_mismatch_raises(folder, tmp_path):
    root, _ = folder
    write_manifest(root, sha="0" * 64)
    with pytest.raises(DataError, match="MANIFEST.tsv.*re-copy"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    assert not list((tmp_path / "c").glob("*.pt"))  # nothing cached from bad data


def test_manifest_count_mismatch_names_folder(folder, tmp_path):
    root, _ = folder
    write_manifest(root)
    (root / "test/dog/0001.png").unlink()
    with pytest.raises(DataError, match=r"test/dog has 1 images but .*MANIFEST.tsv says 2"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)


def test_missing_class_folder_raises(folder, tmp_path):
    root, _ = folder
    for p in (root / "test/cat").iterdir():
        p.unlink()
    (root / "test/cat").rmdir()
    with pytest.raises(DataError, match=r"test/cat is missing"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    for p in (root / "train/cat").iterdir():
        p.unlink()
    (root / "train/cat").rmdir()
    with pytest.raises(DataError, match=r"9 class folders.*missing: cat"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)


def test_truncated_image_names_the_file(folder, tmp_path):
    root, _ = folder
    bad = root / "train/horse/0002.png"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train/horse/0002.png is unreadable or truncated"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)


def test_wrong_image_size_raises(folder, tmp_path):
    root, _ = folder
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "test/frog/0000.png")
    with pytest.raises(DataError, match=r"test/frog/0000.png is \(16, 16\) pixels.*32x32"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)


def test_truncated_jpeg_raises(tmp_path):
    root = tmp_path / "jpg"
    for split in ("train", "test"):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(root / split / c / "0.jpg", quality=75)
    d = load_cifar10(str(root), cache_dir=str(tmp_path / "c"), download=False)
    assert abs(int(d.train_x[0, 0, 5, 5]) - 100) <= 2  # JPEG is lossy, but not by much here
    bad = root / "test/ship/0.jpg"
    bad.write_bytes(bad.read_bytes()[:-60])
    with pytest.raises(DataError, match=r"test/ship/0.jpg is unreadable"):
        load_cifar10(str(root), cache_dir=str(tmp_path / "c2"), download=False)


def write_batches(d: Path, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A fake cifar-10-batches-py with n images per batch; returns all (x, y) in order."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": name.encode()}, f)
        xs.append(torch.from_numpy(x).reshape(n, 3, 32, 32))
        ys.append(torch.tensor(y))
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    return torch.cat(xs), torch.cat(ys)


def test_fake_binary_batches_load(tmp_path):
    x, y = write_batches(tmp_path / "data/cifar-10-batches-py")
    for where in (tmp_path / "data", tmp_path / "data/cifar-10-batches-py"):
        d = load_cifar10(str(where), cache_dir=str(tmp_path / "c"), download=False)
        assert d.source == "CIFAR-10 (torchvision binary)" and d.classes == CLASSES
        assert torch.equal(d.train_x, x[:20]) and torch.equal(d.train_y, y[:20])
        assert torch.equal(d.test_x, x[20:]) and torch.equal(d.test_y, y[20:])
        assert d.train_y.dtype == torch.int64


def test_missing_batch_file_raises(tmp_path):
    write_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py/data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        load_cifar10(str(tmp_path), cache_dir=str(tmp_path / "c"), download=False)


def test_no_data_and_failed_download_names_the_fix(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"))
    msg = str(e.value)
    assert "BENCH_DATA_DIR" in msg and "--data-dir" in msg and "download failed" in msg
    assert msg.count("\n") <= 1
    with pytest.raises(DataError, match="download disabled.*BENCH_DATA_DIR"):
        load_cifar10(str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"), download=False)


# --------------------------------------------------------------- the shared JPEG copy


@pytest.fixture(scope="session")
def shared():
    if not SHARED.is_dir():
        pytest.skip(f"shared CIFAR-10 JPEG copy not found at {SHARED}")
    return load_cifar10(str(SHARED), download=False)  # the usual cache: decoding is tested by the manifest-hash test


def test_shared_copy_counts_classes_and_source(shared):
    assert shared.train_x.shape == (50000, 3, 32, 32) and shared.test_x.shape == (10000, 3, 32, 32)
    assert shared.train_y.bincount().tolist() == [5000] * 10
    assert shared.test_y.bincount().tolist() == [1000] * 10
    assert shared.classes == CLASSES
    assert "JPEG" in shared.source and shared.digest == bd.SHARED_JPEG_SHA256[:16]
    assert 100 < shared.train_x.float().mean() < 140  # real photos, not blank decodes


@pytest.mark.slow  # reads all 60,000 files of the shared copy (236 MB)
def test_shared_copy_matches_its_manifest_hash(monkeypatch):
    if not SHARED.is_dir():
        pytest.skip(f"shared CIFAR-10 JPEG copy not found at {SHARED}")
    # Run the build's hashing over all 236 MB, skipping only the (slow) decode.
    monkeypatch.setattr(bs, "_decode_image", lambda path, raw: torch.zeros(3, 32, 32, dtype=torch.uint8))
    # One pass: checked against a wrong hash, the error names the hash it computed, which is the manifest's.
    with pytest.raises(DataError, match="does not match") as raised:
        bs._read_image_folder(SHARED, bs._list_image_folder(SHARED), "f" * 64)
    assert f"sha256 {bd.SHARED_JPEG_SHA256[:16]}..." in str(raised.value)


def test_shared_copy_default_splits(shared):
    s = make_splits(shared)
    assert len(s.train_y) == 45000 and len(s.val_y) == 5000 and len(s.test_y) == 10000
    assert s.val_y.bincount().tolist() == [500] * 10
    assert not set(s.train_idx.tolist()) & set(s.val_idx.tolist())


# ---------------------------------------------------------------------------- splits


def fake_data(per_class: int = 30, test_per_class: int = 10) -> Cifar10:
    """Images whose first 4 pixels encode their index, so content identifies them."""

    def make(n):
        y = torch.arange(10).repeat_interleave(n)[torch.randperm(10 * n, generator=torch.Generator().manual_seed(5))]
        x = torch.zeros(len(y), 3, 32, 32, dtype=torch.uint8)
        x[:, 0, 0, 0], x[:, 0, 0, 1] = torch.arange(len(y)) // 256, torch.arange(len(y)) % 256
        return x, y

    (tx, ty), (sx, sy) = make(per_class), make(test_per_class)
    return Cifar10(tx, ty, sx, sy, CLASSES, "fake", "0" * 16, "/nowhere")


def ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).tolist()


def test_splits_disjoint_balanced_and_consistent():
    d = fake_data()
    s = make_splits(d, n_train=100, n_val=50, n_test=30, split_seed=3)
    assert len(s.train_y) == 100 and len(s.val_y) == 50 and len(s.test_y) == 30
    assert s.train_y.bincount(minlength=10).tolist() == [10] * 10
    assert s.val_y.bincount(minlength=10).tolist() == [5] * 10
    assert s.test_y.bincount(minlength=10).tolist() == [3] * 10
    assert not set(ids(s.train_x)) & set(ids(s.val_x))
    assert ids(s.train_x) == s.train_idx.tolist() and ids(s.val_x) == s.val_idx.tolist()
    assert torch.equal(s.train_y, d.train_y[s.train_idx]) and torch.equal(s.test_y, d.test_y[s.test_idx])
    full = make_splits(d, n_val=50, split_seed=3)  # n_train=0: everything but validation
    assert sorted(full.train_idx.tolist() + full.val_idx.tolist()) == list(range(300))
    assert len(make_splits(d, split_seed=3, n_val=0).val_y) == 0


def test_splits_depend_only_on_split_seed():
    d = fake_data()
    a = make_splits(d, n_train=100, n_val=50, split_seed=0)
    torch.manual_seed(123)  # the global (trial) RNG must not matter
    b = make_splits(d, n_train=100, n_val=50, split_seed=0)
    assert torch.equal(a.train_idx, b.train_idx) and torch.equal(a.val_idx, b.val_idx)
    c = make_splits(d, n_train=100, n_val=50, split_seed=1)
    assert not torch.equal(a.val_idx, c.val_idx)
    # Validation does not move with n_train; smaller train sets nest inside larger ones.
    bigger = make_splits(d, n_train=200, n_val=50, split_seed=0)
    assert torch.equal(bigger.val_idx, a.val_idx)
    assert set(a.train_idx.tolist()) < set(bigger.train_idx.tolist())


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(n_train=260), r"n_train=260 needs 26 images per class but only 25 of class .* left; use n_train <= 250"),
        (dict(n_train=105), r"multiple of 10"),
        (dict(n_val=310), r"n_val=310 needs 31 images per class but only 30"),
        (dict(n_test=110), r"n_test=110 needs 11 images per class but only 10"),
        (dict(n_val=-10), r"non-negative"),
    ],
)
def test_split_errors(kw, msg):
    with pytest.raises(DataError, match=msg):
        make_splits(fake_data(), **{"n_val": 50, **kw})


# -------------------------------------------------------------------- normalisations


def rand_images(n: int = 300, shape=(3, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def correlated_images(n: int = 3000, seed: int = 0) -> torch.Tensor:
    """(n, 3, 2, 2) images with strongly correlated, unequal-variance pixels, 0..255."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 12, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3, 12, dtype=torch.float64)
    mix = torch.randn(12, 12, generator=g, dtype=torch.float64)
    x = z @ mix
    x = (x - x.min()) / (x.max() - x.min()) * 255
    return x.round().to(torch.uint8).reshape(n, 3, 2, 2)


def cov(y: torch.Tensor) -> torch.Tensor:
    y = y.flatten(1).double()
    y = y - y.mean(0)
    return y.T @ y / (len(y) - 1)


def test_registry_has_the_expected_names():
    assert NORMALIZATIONS.names() == ["raw", "unit", "symmetric", "standardize", "pca", "pca_whiten", "zca"]


@pytest.mark.parametrize("name", NORMALIZATIONS.names())
def test_every_normalizer_shapes_dtype_and_inputs(name):
    x = rand_images()
    f = fit_normalizer(name, x, pca_k=5)
    want = (5,) if name.startswith("pca") else (3, 8, 8)
    assert f.out_shape == want
    y = f(x[:7])
    assert y.shape == (7, *want) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.allclose(f.to("cpu")(x[:7].float()), y, atol=1e-5)  # float input == uint8 input


def test_fixed_scalings():
    x = rand_images()
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255
    assert torch.equal(fit_normalizer("raw", x)(x), x.float())
    u = fit_normalizer("unit", x)(x)
    assert u.min() == 0 and u.max() == 1 and torch.allclose(u, x.float() / 255)
    s = fit_normalizer("symmetric", x)(x)
    assert s.min() == -1 and s.max() == 1 and torch.allclose(s, x.float() / 127.5 - 1, atol=1e-6)


def test_standardize_per_channel_and_fitted_on_train_only():
    x = rand_images(500)
    x[:, 1] //= 4  # channels with different means and spreads
    x[:, 2] = x[:, 2] // 2 + 100
    f = fit_normalizer("standardize", x)
    y = f(x).transpose(0, 1).flatten(1)
    assert torch.allclose(y.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(y.std(1), torch.ones(3), atol=1e-3)
    shifted = f(x.float() + 20).transpose(0, 1).flatten(1).mean(1)  # not re-centred
    sd = x.double().transpose(0, 1).flatten(1).std(1)
    assert torch.allclose(shifted.double(), 20 / sd, atol=1e-3)


def test_zca_whitens_and_keeps_image_shape():
    x = correlated_images()
    f = bn.zca(x, 0, eps=1e-9)  # far below the smallest eigenvalue (~2e-6)
    y = f(x)
    assert y.shape == x.shape and f.out_shape == (3, 2, 2)
    assert torch.allclose(cov(y), torch.eye(12, dtype=torch.float64), atol=2e-3)
    # ZCA = symmetric whitening matrix: outputs stay positively aligned with inputs.
    xc = x.flatten(1).double() - x.flatten(1).double().mean(0)
    assert ((xc * y.flatten(1).double()).sum(0) > 0).all()
    # With the default eps each eigen-direction's variance becomes lambda / (lambda + eps).
    lam = torch.linalg.eigvalsh(cov(x.double() / 255))
    got = torch.linalg.eigvalsh(cov(fit_normalizer("zca", x)(x)))
    assert torch.allclose(got, lam / (lam + bd.WHITEN_EPS), atol=1e-4)


def test_pca_whiten_identity_covariance():
    x = correlated_images()
    y = bn.pca_whiten(x, 4, eps=1e-7)(x)
    assert y.shape == (3000, 4)
    assert torch.allclose(cov(y), torch.eye(4, dtype=torch.float64), atol=2e-3)


def test_pca_decorrelated_sorted_and_fitted_on_train_only():
    x = correlated_images()
    f = fit_normalizer("pca", x, pca_k=6)
    c = cov(f(x))
    lam = torch.linalg.eigvalsh(cov(x.double() / 255)).flip(0)[:6]
    assert torch.allclose(c.diagonal(), lam, rtol=1e-4)  # top-6 variances, descending
    assert (c.diagonal()[:-1] > c.diagonal()[1:]).all()
    assert (c - torch.diag(c.diagonal())).abs().max() < 1e-5 * lam[0]
    assert f(x).mean(0).abs().max() < 1e-4
    test = x.float() + 10  # a shifted "test set" keeps its shift (fit used train mean)
    expected = torch.full((12,), 10.0) @ f.matrix  # the shift, projected
    assert torch.allclose(f(test).mean(0), f(x).mean(0) + expected, atol=1e-4)
    assert expected.abs().max() > 0.01


def test_pca_fit_is_deterministic_with_subsampling(monkeypatch):
    monkeypatch.setattr(bn, "FIT_MAX_IMAGES", 100)
    x = rand_images(400)
    a = fit_normalizer("zca", x)
    bn._last_eig.clear()  # a second fit from scratch, not the one kept
    b = fit_normalizer("zca", x)
    assert torch.equal(a.matrix, b.matrix) and torch.equal(a.mean, b.mean)
    assert not torch.allclose(a.mean, x.flatten(1).float().mean(0))  # used a subsample


def test_pca_and_zca_arms_on_one_training_set_share_one_eigendecomposition(monkeypatch):
    fits, fit = [], bn._fit_eig
    monkeypatch.setattr(bn, "_fit_eig", lambda x: fits.append(len(x)) or fit(x))
    bn._last_eig.clear()
    x = correlated_images()
    got = [fit_normalizer("pca", x, pca_k=6), fit_normalizer("pca_whiten", x.clone(), pca_k=4), fit_normalizer("zca", x)]
    assert fits == [len(x)]  # the same images (a copy too): one covariance and eigh
    changed = x.clone()
    changed[0, 0, 0, 0] ^= 1
    fit_normalizer("zca", changed)
    fit_normalizer("zca", x[:-10])
    assert fits == [len(x)] * 2 + [len(x) - 10]  # one pixel or one image fewer: fitted again
    bn._last_eig.clear()
    fresh = [fit_normalizer("pca", x, pca_k=6), fit_normalizer("pca_whiten", x, pca_k=4), fit_normalizer("zca", x)]
    assert all(torch.equal(a.matrix, b.matrix) and torch.equal(a.mean, b.mean) for a, b in zip(got, fresh))


def test_fit_normalizer_errors():
    x = rand_images()
    with pytest.raises(DataError, match="unknown normalization 'bogus'; valid: raw, unit"):
        fit_normalizer("bogus", x)
    for k in (0, 193):
        with pytest.raises(DataError, match=r"pca_k=.* must be an integer in 1..192"):
            fit_normalizer("pca_whiten", x, pca_k=k)
    assert fit_normalizer("pca", x, pca_k=192).out_shape == (192,)


# ----------------------------------------------------------------- augmentation, batches


def coords(b: int, size: int = 16) -> torch.Tensor:
    """Images whose channel 0 holds row+1 and channel 1 col+1 (padding reads as 0)."""
    r = torch.arange(1, size + 1, dtype=torch.float32)
    img = torch.stack([r[:, None].expand(size, size), r[None, :].expand(size, size)])
    return img.expand(b, 2, size, size).clone()


def decode(out: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recover (row offset, col offset, flipped) from augmented coords() images."""
    m = out.shape[-1] // 2  # the centre pixel is never padding when pad <= size/2
    oy = out[:, 0, m, m].long() - 1 - m + pad
    flipped = out[:, 1, m, m + 1] < out[:, 1, m, m]
    col = torch.where(flipped, out.shape[-1] - 1 - m, m)
    ox = out[:, 1, m, m].long() - 1 - col + pad
    return oy, ox, flipped


def test_augment_preserves_shape_dtype_and_identity_cases():
    x = rand_images(16, (3, 32, 32))
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)
    flips = augment(x, torch.Generator().manual_seed(0), pad=0, flip=True)
    same = (flips == x).flatten(1).all(1)
    mirrored = (flips == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_augment_crops_are_windows_of_the_padded_image():
    x = torch.rand(32, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    out = augment(x, torch.Generator().manual_seed(2), pad=3)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(len(x)):
        windows = [padded[i, :, oy : oy + 12, ox : ox + 12] for oy in range(7) for ox in range(7)]
        matches = [w for w in windows for cand in (w, w.flip(-1)) if torch.equal(out[i], cand)]
        assert len(matches) == 1, i


def test_augment_covers_all_offsets_and_flips_uniformly():
    out = augment(coords(20000), torch.Generator().manual_seed(0), pad=4)
    oy, ox, flipped = decode(out, 4)
    assert oy.min() == 0 and oy.max() == 8 and ox.min() == 0 and ox.max() == 8
    counts = torch.bincount((oy * 9 + ox) * 2 + flipped.long(), minlength=162)
    assert len(counts) == 162 and counts.min() > 60 and counts.max() < 200  # expected ~123 each
    assert abs(flipped.float().mean() - 0.5) < 0.02
    _, _, never = decode(augment(coords(500), torch.Generator().manual_seed(0), flip=False), 4)
    assert not never.any()


def test_augment_is_deterministic_per_generator_seed():
    x = rand_images(64, (3, 32, 32))
    a = augment(x, torch.Generator().manual_seed(7))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(8)))


@pytest.mark.parametrize(
    "damage, expected", [("missing_class", "test/cat is missing"), ("truncated", "0001.png"), ("manifest", "MANIFEST")]
)
def test_cli_bad_data_exits_2_naming_the_problem(bench_cli, folder, tmp_path, damage, expected):
    """The user's view of damaged data: one line naming what is wrong, exit 2, no traceback."""
    root, _ = folder
    if damage == "missing_class":
        for p in (root / "test/cat").iterdir():
            p.unlink()
        (root / "test/cat").rmdir()
    elif damage == "truncated":
        path = root / "train/dog/0001.png"
        path.write_bytes(path.read_bytes()[:40])
    else:
        write_manifest(root, sha="0" * 64)
    args = ["train", "model=mlp", "n_train=20", "n_val=10", "epochs=1", "--data-dir", str(root), "--no-progress"]
    status, _, err = bench_cli(*args, env={"BENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert status == 2, err
    assert expected in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
