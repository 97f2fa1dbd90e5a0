"""Output folders checked before any work starts: a path that cannot be written is one line, exit 2."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import BenchError


class PathError(BenchError):
    """An output folder that does not exist and cannot be made, or cannot be written."""


def writable_dir(path: str | Path, what: str) -> Path:
    """`path` as an existing folder this process can write (made if missing); `what` names it in the error,
    e.g. "--out (the report folder)". Raises PathError with one line otherwise."""
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathError(f"{what}: cannot create folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise PathError(f"{what}: {folder} exists and is not a folder")
    try:  # permission bits do not tell the whole story (read-only mounts, root on NFS): try a file
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench-write-check-"):
            pass
    except OSError as exc:
        raise PathError(f"{what}: cannot write in {folder}: {exc.strerror or exc}") from None
    return folder.resolve()


def writable_file(path: str | Path, what: str) -> Path:
    """`path` as a file that can be created or replaced: its folder is checked (and made) by writable_dir."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise PathError(f"{what}: {file} is a folder; give a file name")
    if file.exists() and not os.access(file, os.W_OK):
        raise PathError(f"{what}: {file} exists and cannot be overwritten")
    return writable_dir(file.parent if str(file.parent) else ".", what) / file.name


def bundle_path(name: str, flag: str) -> Path:
    """A results bundle file to write: a .json.gz name in a folder that can be written (one line otherwise)."""
    if not name.endswith(".json.gz"):
        raise PathError(f"{flag} {name}: a results bundle is gzipped JSON; give a file name ending in .json.gz")
    return writable_file(name, f"{flag} (the results bundle)")
