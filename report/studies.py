"""Which study answers which claim, read from the study files alone (each lists the claim ids it answers);
the files are loaded without the training engine (load_study(check=False)), so the report never imports torch."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from bench.study.files import Study, StudyError, load_study, studies_dir


@lru_cache(maxsize=8)
def _load(folder: str) -> dict[str, Study]:
    out = {}
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            out[path.stem] = load_study(path, check=False)
        except StudyError as exc:  # one broken file must not take the whole report down
            print(f"warning: {exc}", file=sys.stderr)
    return out


def shipped() -> dict[str, Study]:
    """The study files of studies_dir() ($BENCH_STUDIES_DIR, else studies/), by name."""
    return _load(str(studies_dir().resolve()))


def get(name: str) -> Study | None:
    """The shipped study file of that name (None for a user's own study or an unknown name)."""
    return shipped().get(name)


def claim_studies(claim_id: str) -> list[str]:
    """The shipped studies whose file lists `claim_id`, by name (e.g. convergence-speed -> activation, optimizer)."""
    return [name for name, study in shipped().items() if claim_id in study.claims]


def path_of(name: str) -> str:
    """Where a study's file is, as the report shows it: studies/<name>.toml for shipped ones, else ""."""
    study = get(name)
    if study is None:
        return ""
    path = Path(study.path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def command_for(name: str) -> str:
    """How a user names the study on the command line: its name when shipped, else "<name>.toml"."""
    return name if get(name) is not None else f"./{name}.toml"
