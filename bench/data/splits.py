"""Train/validation/test splits: class-balanced, seeded, independent of the trial seed; class subsets
(transfer) with labels renumbered."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .source import Cifar10, DataError


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


def make_splits(data: Cifar10, n_train: int = 0, n_val: int = 5000, n_test: int = 0, split_seed: int = 0) -> Splits:
    """Carve a class-balanced validation set from train; optionally subsample train and test.

    Only `split_seed` decides which images go where; sizes must be multiples of the class
    count (n/10 per class; 0 = all remaining). Validation does not depend on n_train, and a
    smaller n_train is a subset of a larger one with the same seed.
    """
    k = len(data.classes)
    for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if n < 0 or n % k:
            raise DataError(
                f"{name}={n} must be a non-negative multiple of {k} (class-balanced "
                f"splits take {name}/{k} images per class); e.g. {name}={n // k * k}"
            )
    val, train = _balanced(data, data.train_y, split_seed, [("n_val", n_val), ("n_train", n_train or None)])
    test = _balanced(data, data.test_y, split_seed, [("n_test", n_test)])[0] if n_test else torch.arange(len(data.test_y))
    return Splits(
        data.train_x[train],
        data.train_y[train],
        data.train_x[val],
        data.train_y[val],
        data.test_x[test],
        data.test_y[test],
        train,
        val,
        test,
    )


def _balanced(data: Cifar10, y: torch.Tensor, seed: int, sizes: list[tuple[str, int | None]]) -> list[torch.Tensor]:
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
                raise DataError(
                    f"{name}={n} needs {take} images per class but only {len(idx) - start} "
                    f"of class {data.classes[c]!r} are left; use {name} <= "
                    f"{(len(idx) - start) * k} or 0 (all)"
                )
            part.append(idx[start : start + take])
            start += take
    return [torch.cat(p).sort().values for p in parts]


# --- class subsets (transfer) ---
# A transfer study trains a source model on some classes and a target model on the others.
# These splits hold only the chosen classes, with labels renumbered 0..k-1 in the order given.


def class_subset_splits(
    data: Cifar10, classes: tuple[int, ...], per_class: int = 0, n_val: int = 0, n_test: int = 0, split_seed: int = 0
) -> Splits:
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
            raise DataError(
                f"{name}={n} must be a non-negative multiple of {k} (the classes used) to split evenly; e.g. {name}={n // k * k}"
            )
    if per_class < 0:
        raise DataError(f"per_class={per_class} must be >= 0 (0 = every training image left after validation)")
    g = torch.Generator().manual_seed(split_seed)
    val, train, test = [], [], []
    for c in classes:
        idx = torch.nonzero(data.train_y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        left = len(idx) - n_val // k
        if left < max(per_class, 1):
            raise DataError(
                f"class {data.classes[c]!r} has {len(idx)} training images: {n_val // k} for validation "
                f"leave {max(left, 0)}, fewer than per_class={per_class}; lower per_class or n_val"
            )
        val.append(idx[: n_val // k])
        train.append(idx[n_val // k : n_val // k + (per_class or left)])
        tidx = torch.nonzero(data.test_y == c).flatten()
        if n_test // k > len(tidx):
            raise DataError(
                f"n_test={n_test} needs {n_test // k} test images of class {data.classes[c]!r}, "
                f"it has {len(tidx)}; use n_test <= {len(tidx) * k} or 0 (all)"
            )
        test.append(tidx[torch.randperm(len(tidx), generator=g)[: n_test // k]] if n_test else tidx)
    remap = torch.full((len(data.classes),), -1, dtype=torch.int64)
    remap[list(classes)] = torch.arange(k)
    tr, va, te = (torch.cat(p).sort().values for p in (train, val, test))
    return Splits(
        data.train_x[tr],
        remap[data.train_y[tr]],
        data.train_x[va],
        remap[data.train_y[va]],
        data.test_x[te],
        remap[data.test_y[te]],
        tr,
        va,
        te,
    )
