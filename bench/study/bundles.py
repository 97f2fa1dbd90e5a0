"""The results bundle file: one gzipped JSON file of a store's trial runs that `bench export` writes, `bench import`
carries into other stores and the report reads as a source, readable by pandas without MLflow:

    import gzip, json, pandas as pd
    bundle = json.load(gzip.open("results/reference/quick.json.gz"))
    runs = pd.DataFrame(bundle["runs"])          # one row per trial run, columns as in report/frame.py

Layout: {"format", "version", "label", "exported" (date), "exported_by" {"git_commit", "versions" {python, torch,
optuna, mlflow}}, "runs": [records: a row of the runs frame each, missing values left out], "studies": {<study>:
{"profile", "provenance" {device, torch_version, git_commit, data_source, data_digest: lists of the values its runs
carry; first_run, last_run: dates; final_runs, tune_runs: counts}, "definition" (see `definition`), "extras"
{<name>: the extra's JSON}}}}. The runs' `url` column and the extras' `url` are left out: they point at the
exporting machine's MLflow UI.

Version 2 adds what continuing from a bundle needs: per run `origin_run_id` (the run id in the store that first
measured it; an imported run keeps it, so each run is imported exactly once however often bundles are merged) and
`optuna_trial` (its trial number in that store's Optuna study: the order in which tuning trials count), and in each
definition the tuning range. A version 1 bundle reads as before; `bench import` takes its trial order from the runs'
start times and its tuning range from the study file, which has to agree with the bundle's definition anyway.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError

from .files import Study

FORMAT = "ablation-bench results"
VERSION = 2
SOURCES = Path(__file__).resolve().parents[2] / "results" / "sources"  # `bench import --as-source`: read by the report
SKIP = {"seed", "device", "data_dir"}  # config keys that may differ without the study being another one


class BundleError(BenchError):
    """A file that is not a readable results bundle; the message names it."""


@dataclass
class Bundle:
    label: str  # what the report calls this source, e.g. "reference"
    runs: pd.DataFrame  # the runs frame (report/frame.py)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)  # extras[study][name] (report/frame.py, "Extras")
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)  # per study: profile, provenance, definition
    exported: str = ""  # when
    exported_by: dict[str, Any] = field(default_factory=dict)  # the exporting code's commit and library versions
    version: int = VERSION  # the file's format version (1: before origin_run_id, optuna_trial and the tuning range)


def clean_value(value: Any) -> Any:
    """A value JSON can hold: non-finite floats -> None, numpy numbers -> Python ones."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return clean_value(value.item())
    return value


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def definition(study: Study, profile: str) -> dict[str, Any]:
    """What a study file asks a profile to run: the profile's overrides, arms with their config overrides (study base,
    then profile base, then the arm's own), seeds, the tuned parameter and its search, the claims and the published
    figures."""
    base = {**study.base, **study.profiles[profile].base}
    tuned = study.tuning is not None and study.tuning_trials(profile) > 0
    t = study.tuning
    return {
        "file": Path(study.path).name,
        "description": study.description,
        "claims": list(study.claims),
        "profile_base": dict(study.profiles[profile].base),  # the profile's own overrides (also inside each arm)
        "arms": {arm.name: {**base, **arm.overrides} for arm in study.arms(profile)},
        "seeds": len(study.seeds(profile)),
        "tuned": t.param if tuned else None,
        "tuning": {
            "param": t.param,
            "low": t.low,
            "high": t.high,
            "log": t.log,
            "trials": study.tuning_trials(profile),
            "seed": t.seed,
        }
        if tuned
        else None,
        "literature": [vars(lit).copy() for lit in study.literature],
    }


def same_value(a: Any, b: Any) -> bool:
    """Config values equal across JSON and TOML types (1 == 1.0, "true" vs True)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(a) == str(b)


def measured_differently(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What makes runs of the `recorded` definition other measurements than the study file's `now`: an arm both
    have whose config differs, or another tuned parameter or search range. Arms and seeds that only one of them has
    do not count (a study file may gain seeds or arms; runs of arms it dropped are simply not wanted)."""
    out = []
    for arm in [a for a in recorded.get("arms", {}) if a in now["arms"]]:
        theirs, ours = recorded["arms"][arm], now["arms"][arm]
        keys = sorted((set(theirs) | set(ours)) - SKIP - {now["tuned"]})
        differ = [
            f"{k} {theirs.get(k, '-')} there, {ours.get(k, '-')} here" for k in keys if not same_value(theirs.get(k), ours.get(k))
        ]
        if differ:
            out.append(f"arm {arm}: " + ", ".join(differ[:3]))
    if recorded.get("tuned") != now["tuned"]:
        out.append(f"tuned parameter {recorded.get('tuned')} there, {now['tuned']} here")
    elif recorded.get("tuning") and now["tuning"]:
        for key in ("low", "high", "log"):
            if not same_value(recorded["tuning"].get(key), now["tuning"][key]):
                out.append(f"tuning {key} {recorded['tuning'].get(key)} there, {now['tuning'][key]} here")
    return out


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
    """Read a bundle written by `write_bundle` (any version up to VERSION); BundleError (one line) when the file is
    not one."""
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
        int(doc.get("version", 1)),
    )
