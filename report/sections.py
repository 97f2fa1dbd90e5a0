"""The sections of one results source: one per claim (its registered analysis, else the generic layout; "not yet
measured" without runs), then one generic section per study that is not a shipped study file (a user's own).
An analysis that fails still gives its section, with the error in it."""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from bench.claims import CLAIMS  # plain data, no torch

from . import studies
from .claims import Evidence, Extras, commands, discover, generic
from .figures import FigureMaker
from .frame import compact, finals
from .section import Section
from .verdict import INCONCLUSIVE, NOT_MEASURED, Verdict


def not_measured(claim_id: str, names: list[str]) -> Section:
    """A claim without final runs: what would measure it."""
    claim = CLAIMS[claim_id]
    if names:
        cmds = [c for s in names for c in commands(s)]
        why = "no runs of its study yet: run " + " / ".join(cmds)
    else:
        cmds, why = [], "no study file lists this claim yet (add its id to a study's `claims`)"
    return Section(claim_id, claim.text, names, claim.settles, Verdict(NOT_MEASURED, why), commands=cmds)


def guarded(ev: Evidence) -> Section:
    """Run the claim's analysis; if it fails, the report still comes out, with the error in that section
    (and the traceback on stderr). BENCH_DEBUG=1 raises instead."""
    try:
        return discover()[ev.claim_id](ev)
    except Exception as exc:
        if os.environ.get("BENCH_DEBUG"):
            raise
        traceback.print_exc()
        sec = generic(ev)
        sec.verdict = Verdict(
            INCONCLUSIVE,
            f"the analysis failed ({type(exc).__name__}: {exc}); per-arm evidence shown",
            n_seeds=sec.verdict.n_seeds,
        )
        return sec


def own_studies(df: pd.DataFrame) -> list[str]:
    """Studies with final runs that are not shipped study files (a user's own, `bench study ./my-study.toml`)."""
    if df.empty:
        return []
    names = dict.fromkeys(df.loc[df["stage"] == "final", "study"].dropna())
    return [s for s in names if studies.get(s) is None]


def own_study_section(df: pd.DataFrame, figs: FigureMaker, name: str, extras: Extras) -> Section:
    """The generic layout for a user's own study: per-arm accuracy and curves, the claims it names, no verdict rule."""
    runs = finals(df, name)
    answers = sorted({c.strip() for v in runs["claims"].dropna() for c in str(v).split(",") if c.strip()})
    sec = generic(Evidence("", df, figs, extras, [name]), name)
    sec.title = f"your study {name}"
    sec.claim = f"A study file of your own ({name}.toml), not one of the shipped studies/: the generic layout." + (
        f" It names the claims {', '.join(answers)}, whose sections above use the shipped studies." if answers else ""
    )
    sec.settles = "the comparison its arms make"
    return sec


def section_for(df: pd.DataFrame, figs: FigureMaker, extras: Extras, key: tuple[str, str]) -> Section:
    """The section of ("claim", id) or ("study", a user's own study name)."""
    kind, name = key
    if kind == "study":
        sec = own_study_section(df, figs, name, extras)
    else:
        ev = Evidence(name, df, figs, extras, studies.claim_studies(name))
        sec = (
            guarded(ev)
            if ev.measured() and name in discover()
            else generic(ev)
            if ev.measured()
            else not_measured(name, ev.studies)
        )
    sec.figures = [f for f in sec.figures if f is not None]
    return sec


_SHARED: tuple = ()  # (df, figs, extras) for forked workers: inherited at fork, never pickled


def _forked(key: tuple[str, str]) -> Section:
    return section_for(*_SHARED, key)


def workers() -> int:
    """Processes that draw sections at once: $BENCH_REPORT_WORKERS, else the CPU count up to 4; 1 where fork is missing."""
    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin":
        return 1
    return max(1, int(os.environ.get("BENCH_REPORT_WORKERS") or min(4, os.cpu_count() or 1)))


def build_sections(df: pd.DataFrame, figs: FigureMaker, study: str | None = None, extras: Extras | None = None) -> list[Section]:
    """One section per claim id in CLAIMS order (only `study`'s claims when given), then one per user's own study;
    `extras`: the study extras (report/frame.py, "Extras"), {} when none were logged. Sections are drawn by up to
    `workers()` forked processes (figures dominate the time), and come back in this order."""
    global _SHARED
    extras = extras or {}
    df = compact(df)
    keys = [("claim", c) for c in CLAIMS if study is None or study in studies.claim_studies(c)]
    keys += [("study", name) for name in own_studies(df) if study in (None, name)]
    n = min(workers(), len(keys))
    if n <= 1 or not figs.enabled:  # without figures a section takes milliseconds: forking would cost more
        return [section_for(df, figs, extras, k) for k in keys]
    discover()  # imported once here, inherited by every worker
    _SHARED = (df, figs, extras)
    try:
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_forked, keys))
    finally:
        _SHARED = ()
