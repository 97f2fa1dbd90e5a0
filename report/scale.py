"""What scale a verdict was measured at, and how much of its study exists: the profile, training images, epochs
and device; a small-scale label; "3 of 12 final runs; arms missing: ..." for a study still running or stopped
early; how the runs differ from the current study file; the reference arm beside its published figure."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from bench.study.bundles import SKIP, definition
from bench.study.bundles import same_value as _same
from bench.study.files import Study

from . import studies
from .frame import PROFILE_ORDER, finals, num
from .metrics import column, error, final_acc, mean_of, values
from .section import Scale, fmt

SCALE_RANK = {"full": 2, "quick": 1, "smoke": 0}  # the larger scale wins the headline


def short_device(device: str) -> str:
    """ "cpu (x86_64)" -> "CPU", "cuda (NVIDIA H200)" -> "H200"."""
    m = re.match(r"^(\w+)(?::\d+)?\s*\((.*)\)$", str(device).strip())
    if not m:
        return str(device)
    kind, name = m.groups()
    return "CPU" if kind == "cpu" else name.replace("NVIDIA ", "").strip() or kind.upper()


def rank(profiles: str) -> int:
    """The scale rank of a profile list such as "quick" or "quick, smoke" (its smallest profile counts)."""
    return min((SCALE_RANK.get(p.strip(), -1) for p in profiles.split(",") if p.strip()), default=-1)


def _span(values_: list[int], unit: str) -> str:
    vals = sorted(set(values_))
    if not vals:
        return ""
    text = f"{vals[0]:,}" if len(vals) == 1 else f"{vals[0]:,}–{vals[-1]:,}"
    return f"{text} {unit}"


def expected(name: str, profile: str, recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """The definition the runs were meant to follow: the one recorded with them (a bundle), else the current
    study file's; None for a study without a file here."""
    if recorded:
        return recorded
    study = studies.get(name)
    return definition(study, profile) if study is not None and profile in study.profiles else None


def progress(name: str, runs: pd.DataFrame, meant: dict[str, Any] | None) -> str:
    """ "" when every (arm, seed) of the definition has a final run, else "init: 3 of 12 final runs; arms missing: ..."."""
    if not meant:
        return ""
    arms, seeds = list(meant["arms"]), int(meant["seeds"])
    done = {(a, int(s)) for a, s in zip(runs["arm"], runs["seed"]) if a in meant["arms"] and 0 <= int(s) < seeds}
    total = len(arms) * seeds
    if len(done) >= total:
        return ""
    counts = {a: sum((a, s) in done for s in range(seeds)) for a in arms}
    missing = [a for a, c in counts.items() if c == 0]
    partial = [f"{a} ({c} of {seeds})" for a, c in counts.items() if 0 < c < seeds]
    text = f"{name}: {len(done)} of {total} final runs"
    text += f"; arms missing: {', '.join(missing)}" if missing else ""
    return text + (f"; seeds missing in {', '.join(partial)}" if partial else "")


def mismatch(name: str, runs: pd.DataFrame, profile: str, recorded: dict[str, Any] | None) -> list[str]:
    """How these runs (and the definition recorded with them) differ from the current study file at `profile`."""
    study: Study | None = studies.get(name)
    if study is None or profile not in study.profiles:
        return []
    now = definition(study, profile)
    where = f"studies/{name}.toml"
    out = []
    extra = [a for a in dict.fromkeys(runs["arm"]) if a not in now["arms"]]
    if extra:
        out.append(f"{name}: arms not in {where} now: {', '.join(extra)}")
    if recorded:
        added = [a for a in now["arms"] if a not in recorded.get("arms", {})]
        if added:
            out.append(f"{name}: {where} now also has arms {', '.join(added)}")
        if int(recorded.get("seeds", now["seeds"])) != now["seeds"]:
            out.append(f"{name}: measured with {recorded['seeds']} seeds per arm; {where} now asks {now['seeds']}")
    differ: dict[str, tuple[Any, Any]] = {}
    for _, row in runs.iterrows():
        want = now["arms"].get(row["arm"])
        for key, value in (want or {}).items():
            if key in SKIP or key == now["tuned"] or f"config.{key}" not in row.index:
                continue
            got = row[f"config.{key}"]
            if key == "batch_size" and 0 < float(got) <= float(value) and float(value) % float(got) == 0:
                continue  # halved after running out of device memory: the same study
            if got is not None and not (isinstance(got, float) and math.isnan(got)) and not _same(value, got):
                differ.setdefault(key, (got, value))
    if differ:
        out.append(
            f"{name}: config differs from {where} now: "
            + ", ".join(f"{k} {fmt(g) if isinstance(g, float) else g} (file: {v})" for k, (g, v) in list(differ.items())[:4])
        )
    return out


def literature(name: str, runs: pd.DataFrame, profile: str) -> list[str]:
    """The reference arm's measured value beside each published figure the study file names (metric: a record
    field; <split>_acc and <split>_error count diverged runs at chance)."""
    study = studies.get(name)
    out = []
    for lit in study.literature if study is not None else ():
        arm = runs[runs["arm"] == lit.arm]
        split, _, kind = lit.metric.rpartition("_")
        frac = kind in ("acc", "error")  # accuracies and errors are fractions, shown in %
        metric = final_acc(split) if kind == "acc" else error(split) if kind == "error" else column(lit.metric)
        here = mean_of(values(arm, metric)) if len(arm) else math.nan
        shown = (lambda v: f"{fmt(v * 100)}%") if frac else fmt
        where = "" if lit.profile == profile else f" (at the {lit.profile} profile's scale)"
        measured = (
            f"{shown(here)} here ({profile}, {arm['seed'].nunique()} seeds)" if len(arm) else f"not measured here ({profile})"
        )
        out.append(f"{lit.arm} {lit.metric}: {measured}; {lit.source}: {shown(lit.value)}{where}")
    return out


def scale_of(df: pd.DataFrame, names: list[str], recorded: dict[str, dict[str, Any]] | None = None) -> Scale | None:
    """The Scale of a section whose claim `names` answer, from one source's runs frame; `recorded`: the study
    definitions stored with the runs (a bundle's), by study."""
    recorded = recorded or {}
    parts = [(n, finals(df, n)) for n in names if not df.empty]
    parts = [(n, r) for n, r in parts if len(r)]
    if not parts:
        return None
    profiles = [r["profile"].iloc[0] for _, r in parts]
    runs = pd.concat([r for _, r in parts])
    devices = sorted({short_device(d) for d in runs["device"].dropna()}) if "device" in runs else []
    ordered = [p for p in PROFILE_ORDER if p in profiles] + [p for p in dict.fromkeys(profiles) if p not in PROFILE_ORDER]
    meant = {n: expected(n, p, (recorded.get(n) or {}).get("definition")) for (n, _), p in zip(parts, profiles)}
    return Scale(
        profile=", ".join(ordered),
        images=_span(num(runs, "n_train_used").dropna().astype(int).tolist(), "training images"),
        epochs=_span(num(runs, "config.epochs").dropna().astype(int).tolist(), "epochs"),
        device=", ".join(devices),
        small=any(p != "full" for p in profiles),
        progress=[t for (n, r) in parts if (t := progress(n, r, meant[n]))],
        mismatch=[m for (n, r), p in zip(parts, profiles) for m in mismatch(n, r, p, (recorded.get(n) or {}).get("definition"))],
        literature=[t for (n, r), p in zip(parts, profiles) for t in literature(n, r, p)],
    )
