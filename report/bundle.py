"""`bench export`: the runs frame (report/frame.py) of an MLflow store, the study extras and provenance, written as a
results bundle (the file format and its reader: bench/study/bundles.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.study.bundles import Bundle, BundleError, definition, write_bundle
from bench.study.files import PROFILES, Study
from bench.study.tracking import missing_store
from bench.study.uris import redact
from bench.versions import library_versions

from .frame import distinct, profile_of

PROVENANCE = ("device", "torch_version", "git_commit", "data_source", "data_digest")  # per-run columns summarised per study


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except OSError:
        return ""


def _date(ms: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms == ms else ""


def select_runs(df: pd.DataFrame, profile: str | None) -> pd.DataFrame:
    """Each study's runs at `profile`, or (None) at its most thorough profile with final runs (what the report shows),
    else with tuning runs (a study stopped at a time budget before its final stage: the tuning goes on from them)."""
    if df.empty:
        return df
    keep = []
    for _, runs in df.groupby("study", sort=False):
        chosen = profile or profile_of(runs[runs["stage"] == "final"]) or profile_of(runs)
        keep.append(runs[runs["profile"] == chosen])
    return pd.concat(keep) if keep else df.iloc[:0]


def make_bundle(df: pd.DataFrame, extras: dict, study_files: dict[str, Study], label: str) -> Bundle:
    """A bundle of the runs `df` (already selected), the extras of its studies and each study's provenance and
    definition (from `study_files`, the study files as the exporting code reads them)."""
    studies: dict[str, dict[str, Any]] = {}
    for name, runs in df.groupby("study", sort=False) if not df.empty else []:
        finals = runs[runs["stage"] == "final"]
        profile = profile_of(finals) or profile_of(runs)
        starts = pd.to_numeric(runs["start_time"], errors="coerce")
        entry = {
            "profile": profile,
            "provenance": {
                **{c: distinct(finals, c) for c in PROVENANCE},
                "first_run": _date(float(starts.min())),
                "last_run": _date(float(starts.max())),
                "final_runs": int(len(finals)),
                "tune_runs": int((runs["stage"] == "tune").sum()),
            },
        }
        study = study_files.get(name)
        if study is not None and profile in PROFILES:
            entry["definition"] = definition(study, profile)
        if extras.get(name):  # each without its `url`: a link into the exporting machine's MLflow UI
            entry["extras"] = {k: {f: v for f, v in x.items() if f != "url"} for k, x in extras[name].items()}
        studies[name] = entry
    kept = {name: entry["extras"] for name, entry in studies.items() if "extras" in entry}
    return Bundle(
        label,
        df,
        kept,
        studies,
        time.strftime("%Y-%m-%d %H:%M:%S"),
        {"git_commit": _git_commit(), "versions": library_versions()},
    )


def export(
    tracking_uri: str, out: str | Path, names: list[str] | None = None, profile: str | None = None, label: str | None = None
) -> Bundle:
    """`bench export`: the MLflow store's runs (of `names`, at `profile` or each study's most thorough), their extras
    and provenance, and the definition of each study file they were run from, written to `out`."""
    from bench.study.files import load_study

    from . import studies
    from .load import load_extras, load_runs, study_file_params

    if missing_store(tracking_uri):
        raise BundleError(f"no MLflow store at {redact(tracking_uri)}: run a study first, or pass --tracking-uri")
    df = load_runs(tracking_uri)
    if names:
        missing = [n for n in names if df.empty or n not in set(df["study"])]
        if missing:
            raise BundleError(
                f"no runs of {', '.join(missing)} in {redact(tracking_uri)} (studies with runs: "
                f"{', '.join(sorted(set(df['study']))) if len(df) else 'none'})"
            )
        df = df[df["study"].isin(names)]
    df = select_runs(df, profile)
    if df.empty:
        raise BundleError(f"no finished runs to export in {redact(tracking_uri)}" + (f" at profile {profile}" if profile else ""))
    files = dict(studies.shipped())
    for name, path in study_file_params(tracking_uri).items():
        if name not in files and Path(path).is_file():  # a user's own study file, where it still is
            try:
                files[name] = load_study(Path(path), check=False)
            except BenchError:
                pass
    bundle = make_bundle(df.reset_index(drop=True), load_extras(tracking_uri), files, label or Path(out).name.split(".")[0])
    write_bundle(bundle, out)
    return bundle
