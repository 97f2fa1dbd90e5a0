"""The on-disk cache every part of the benchmark shares: its folder, all-or-nothing writes and a lock
for workers that would build the same entry."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """$BENCH_CACHE_DIR, else ~/.cache/ablation-bench (never inside the data folder)."""
    return Path(os.environ.get("BENCH_CACHE_DIR") or "~/.cache/ablation-bench").expanduser()


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: a concurrent reader sees the
    old file or the whole new one, never a torn write. Files are world-readable (a shared cache)."""
    import torch

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (released by the OS if the process dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then os.replace: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
