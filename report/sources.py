"""Where results come from: exported bundles (results/reference/ by default) and an MLflow store. Each is one
Source the report labels ("reference · quick · CPU", "your runs · smoke · CPU") and never mixes with another;
where several cover a claim, one measured with enough seeds, then the larger scale, gives the headline verdict."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.study.bundles import SOURCES as KEPT
from bench.study.bundles import read_bundle
from bench.study.stores import MLflowStore, one_line
from bench.study.tracking import missing_store
from bench.study.uris import redact

from .frame import PROFILE_ORDER
from .scale import rank, short_device
from .section import Section
from .verdict import MIN_SEEDS, NOT_MEASURED

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"  # the shipped bundles
LOCAL = "mlflow"  # in --results: the MLflow store (--tracking-uri, $MLFLOW_TRACKING_URI or ./mlflow.db)
YOUR_RUNS = "your runs"


@dataclass
class Source:
    name: str  # "reference" (a bundle's label) or "your runs" (the MLflow store)
    origin: str  # the bundle file, or the tracking URI with any password hidden
    df: pd.DataFrame  # the runs frame (report/frame.py)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # a bundle's per-study profile, provenance, definition
    exported: str = ""  # a bundle's export date
    store: str = ""  # the tracking URI when the runs come from an MLflow store ("" for a bundle)

    def heading(self) -> str:
        """ "reference · quick · CPU": the name, the profiles of its final runs and their devices."""
        finals = self.df[self.df["stage"] == "final"] if len(self.df) else self.df
        present = set(finals["profile"].dropna()) if len(finals) else set()
        profiles = [p for p in PROFILE_ORDER if p in present] + sorted(present - set(PROFILE_ORDER))
        devices = sorted({short_device(d) for d in finals["device"].dropna()}) if "device" in finals else []
        return " · ".join([self.name, "+".join(profiles), "+".join(devices)]).rstrip(" ·") if len(finals) else self.name

    def slug(self) -> str:
        """A file-name-safe form of the heading, for figure names."""
        return re.sub(r"[^a-z0-9]+", "-", self.heading().lower()).strip("-")


def from_bundle(path: str | Path, study: str | None = None) -> Source:
    """A bundle file as a Source (its runs link to no MLflow page here: they live in the exporting store)."""
    b = read_bundle(path)
    df = b.runs.assign(url="") if len(b.runs) else b.runs
    if study is not None and len(df):
        df = df[df["study"] == study]
    return Source(b.label, str(path), df.reset_index(drop=True), b.extras, b.studies, b.exported)


def from_mlflow(tracking_uri: str, study: str | None = None) -> Source:
    """The MLflow store's runs and extras as a Source called "your runs"."""
    from .load import load_extras, load_runs

    if missing_store(tracking_uri):
        raise BenchError(f"no MLflow store at {redact(tracking_uri)}: run a study first, or pass --tracking-uri")
    try:
        if tracking_uri.startswith(("http://", "https://")):
            MLflowStore(tracking_uri).check()  # a server that is down answers at once, not after MLflow's retries
        runs, extras = load_runs(tracking_uri, study), load_extras(tracking_uri, study)
    except BenchError as exc:
        raise StoreUnusable(str(exc)) from None
    except Exception as exc:  # unreachable, credentials refused, not an MLflow store
        raise StoreUnusable(f"cannot read the MLflow store {redact(tracking_uri)}: {one_line(exc)}") from None
    return Source(YOUR_RUNS, redact(tracking_uri), runs, extras, store=tracking_uri)


class StoreUnusable(BenchError):
    """An MLflow store among the report's sources that cannot be read (one line, the URI's password hidden)."""


def bundle_files(path: str | Path) -> list[Path]:
    """A bundle file, or every *.json.gz in a folder (sorted); BenchError for a path that is neither."""
    p = Path(path).expanduser()
    if p.is_dir():
        return sorted(p.glob("*.json.gz"))
    if p.is_file():
        return [p]
    raise BenchError(
        f"--results {path}: no such bundle file or folder (give files written by `bench export`, a folder of them, or '{LOCAL}')"
    )


def gather(results: list[str] | None, tracking_uri: str, study: str | None = None) -> list[Source]:
    """The sources of a report: each entry of `results` is a bundle file, a folder of bundles, or "mlflow" (the store
    at `tracking_uri`); None = the shipped bundles (results/reference/), the bundles kept with `bench import
    --as-source` (results/sources/) and the MLflow store. Sources without runs are left out unless none has any; by
    default a SQLite store that does not exist yet is not created."""
    folders = [str(f) for f in (REFERENCE, KEPT) if f.is_dir() and any(f.glob("*.json.gz"))]
    entries = results if results is not None else folders + [LOCAL] * (not missing_store(tracking_uri))
    sources = []
    for entry in entries:
        if entry == LOCAL or "://" in entry:
            try:
                sources.append(from_mlflow(tracking_uri if entry == LOCAL else entry, study))
            except StoreUnusable as exc:
                if results is not None:  # asked for by name: the report would be missing what was asked
                    raise
                print(f"warning: {exc}; the report goes on without it", file=sys.stderr, flush=True)
        else:
            sources += [from_bundle(f, study) for f in bundle_files(entry)]
    measured = [s for s in sources if len(s.df) and (s.df["stage"] == "final").any()]
    return measured or sources[-1:] or [Source(YOUR_RUNS, redact(tracking_uri), pd.DataFrame())]


# ---------------------------------------------------------------------------- several sources, one claim
@dataclass
class View:
    """One claim (or a user's study) across sources: a section per source that measured it, in source order."""

    entries: list[Section]

    @property
    def headline(self) -> Section:
        """The section whose verdict the summary shows: measured with at least MIN_SEEDS seeds per arm, measured,
        the larger scale, the current study definition, a complete study, more seeds; ties go to the earlier source
        (a larger scale just started, with one seed, does not take the headline from a complete smaller one)."""
        return max(self.entries, key=preference)


def preference(sec: Section) -> tuple:
    measured = sec.verdict.label != NOT_MEASURED
    enough = measured and sec.verdict.n_seeds >= MIN_SEEDS
    sc = sec.scale
    if sc is None:
        return (enough, measured, -1, False, False, sec.verdict.n_seeds)
    return (enough, measured, rank(sc.profile), not sc.mismatch, not sc.progress, sec.verdict.n_seeds)


def views(per_source: list[list[Section]]) -> list[View]:
    """Group the sources' sections by claim (claims in CLAIMS order, then users' studies as first met); a claim no
    source measured keeps one "not yet measured" section."""
    groups: dict[str, list[Section]] = {}
    for sections in per_source:
        for sec in sections:
            groups.setdefault(sec.anchor, []).append(sec)
    claims = [k for k in groups if k.startswith("claim-")]
    order = claims + [k for k in groups if k not in claims]
    out = []
    for key in order:
        measured = [s for s in groups[key] if s.verdict.label != NOT_MEASURED]
        out.append(View(measured or groups[key][:1]))
    return out
