"""Output folders and files checked before any work starts (a path that cannot be written is one line, exit 2),
and `--json FILE|-`, the one meaning of --json in every command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

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


STDOUT = "-"  # `--json -`: the JSON document on stdout, everything else the command prints on stderr


class JsonOut:
    """`--json FILE|-` of any command: FILE is checked when this is made (before any work; one line otherwise) and
    written at the end; `-` puts the JSON alone on stdout, so `bench ... --json - | python -m json.tool` works.
    A command prints its other output to the stream `human()` yields (stderr for `-`, where print() goes too)."""

    def __init__(self, value: str | None, flag: str = "--json"):
        self.value = value
        self.to_stdout = value == STDOUT
        self.path = writable_file(value, flag) if value and not self.to_stdout else None
        self._stdout = sys.stdout

    def __bool__(self) -> bool:
        return self.value is not None

    @contextlib.contextmanager
    def human(self) -> Iterator[TextIO]:
        """While inside: the stream for everything besides the JSON. With `-` it is stderr, and sys.stdout points
        there too, so stray print() calls cannot corrupt the JSON on stdout."""
        if not self.to_stdout:
            yield sys.stdout
            return
        self._stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            yield sys.stderr

    @contextlib.contextmanager
    def file_for_tool(self, name: str) -> Iterator[Path | None]:
        """A path for code that writes its own JSON file: FILE itself (None without --json), or for `-` a temporary
        file `name` whose text goes to stdout when the block ends."""
        if not self.to_stdout:
            yield self.path
            return
        with tempfile.TemporaryDirectory(prefix="bench-json-") as tmp:
            path = Path(tmp) / name
            yield path
            if path.exists():
                self.write_text(path.read_text())

    def write(self, payload: Any) -> None:
        """Write `payload` as JSON (strict: no NaN) to FILE or stdout; nothing when --json was not given."""
        if self:
            self.write_text(json.dumps(payload, indent=1, allow_nan=False, default=str))

    def write_text(self, text: str) -> None:
        text = text if text.endswith("\n") else text + "\n"
        if self.to_stdout:
            self._stdout.write(text)
            self._stdout.flush()
        elif self.path is not None:
            self.path.write_text(text)
