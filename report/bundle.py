"""Portable result bundles (`bench export`): the runs frame (report/frame.py), the study extras and provenance in
one gzipped JSON file that pandas reads without MLflow:

    import gzip, json, pandas as pd
    bundle = json.load(gzip.open("results/reference/quick.json.gz"))
    runs = pd.DataFrame(bundle["runs"])          # one row per trial run, columns as in report/frame.py

Layout: {"format", "version", "label", "exported" (date), "exported_by" {"git_commit"}, "runs": [records: a
row of the frame each, missing values left out], "studies": {<study>: {"profile", "provenance" {device,
torch_version, git_commit, data_source, data_digest: lists of the values its runs carry; first_run, last_run:
dates; final_runs, tune_runs: counts}, "definition" (see `definition`), "extras" {<name>: the extra's JSON}}}}.
The runs' `url` column and the extras' `url` are left out: they point at the exporting machine's MLflow UI.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.study.files import PROFILES, Study

from .frame import clean_value, distinct, is_missing, profile_of

FORMAT = "ablation-bench results"
VERSION = 1
PROVENANCE = ("device", "torch_version", "git_commit", "data_source", "data_digest")  # per-run columns summarised per study


class BundleError(BenchError):
    """A file that is not a readable results bundle; the message names it."""


@dataclass
class Bundle:
    label: str  # what the report calls this source, e.g. "reference"
    runs: pd.DataFrame  # the runs frame (report/frame.py)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)  # extras[study][name] (report/frame.py, "Extras")
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # per study: profile, provenance, definition
    exported: str = ""  # when
    exported_by: dict[str, Any] = field(default_factory=dict)  # the exporting code's commit


def definition(study: Study, profile: str) -> dict[str, Any]:
    """What a study file asks a profile to run: the profile's overrides, arms with their config overrides (study base,
    then profile base, then the arm's own), seeds, the tuned parameter, the claims and the published figures."""
    base = {**study.base, **study.profiles[profile].base}
    return {
        "file": Path(study.path).name,
        "description": study.description,
        "claims": list(study.claims),
        "profile_base": dict(study.profiles[profile].base),  # the profile's own overrides (also inside each arm)
        "arms": {arm.name: {**base, **arm.overrides} for arm in study.arms(profile)},
        "seeds": len(study.seeds(profile)),
        "tuned": study.tuning.param if study.tuning is not None and study.tuning_trials(profile) else None,
        "literature": [vars(lit).copy() for lit in study.literature],
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except OSError:
        return ""


def _date(ms: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms == ms else ""


def select_runs(df: pd.DataFrame, profile: str | None) -> pd.DataFrame:
    """Each study's runs at `profile`, or (None) at its most thorough profile with final runs (what the report shows)."""
    if df.empty:
        return df
    keep = []
    for _, runs in df.groupby("study", sort=False):
        chosen = profile or profile_of(runs[runs["stage"] == "final"])
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
    return Bundle(label, df, kept, studies, time.strftime("%Y-%m-%d %H:%M:%S"), {"git_commit": _git_commit()})


def write_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write the bundle as gzipped JSON (NaN -> left out; numpy numbers as plain ones) and return its path."""
    path = Path(path)
    rows = bundle.runs.drop(columns=["url"], errors="ignore").to_dict("records")  # links to the exporting machine's UI
    runs = [{k: clean_value(v) for k, v in row.items() if not is_missing(v)} for row in rows]
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "label": bundle.label,
        "exported": bundle.exported,
        "exported_by": bundle.exported_by,
        "studies": bundle.studies,
        "runs": runs,
    }
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", compresslevel=9) as f:
        json.dump(doc, f, separators=(",", ":"), default=clean_value)
    tmp.replace(path)  # a reader never sees half a bundle
    return path


def read_bundle(path: str | Path) -> Bundle:
    """Read a bundle written by `write_bundle`; BundleError (one line) when the file is not one."""
    path = Path(path)
    try:
        with gzip.open(path, "rt") as f:
            doc = json.load(f)
    except (OSError, EOFError, ValueError) as exc:
        raise BundleError(f"{path}: not a results bundle (gzipped JSON written by `bench export`): {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f'{path}: not a results bundle (no "format": "{FORMAT}")')
    if doc.get("version", 0) > VERSION:
        raise BundleError(f"{path}: bundle version {doc['version']} is newer than this code reads ({VERSION}); update the code")
    studies = doc.get("studies", {})
    extras = {name: s["extras"] for name, s in studies.items() if s.get("extras")}
    return Bundle(
        doc.get("label") or path.name.split(".")[0],
        pd.DataFrame(doc.get("runs", [])),
        extras,
        studies,
        doc.get("exported", ""),
        doc.get("exported_by", {}),
    )


def export(
    tracking_uri: str, out: str | Path, names: list[str] | None = None, profile: str | None = None, label: str | None = None
) -> Bundle:
    """`bench export`: the MLflow store's runs (of `names`, at `profile` or each study's most thorough), their extras
    and provenance, and the definition of each study file they were run from, written to `out`."""
    from bench.study.files import load_study
    from bench.study.tracking import redact

    from . import studies
    from .load import load_extras, load_runs, study_file_params
    from .sources import missing_store

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
    if df.empty or not (df["stage"] == "final").any():
        raise BundleError(f"no final runs to export in {redact(tracking_uri)}" + (f" at profile {profile}" if profile else ""))
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
