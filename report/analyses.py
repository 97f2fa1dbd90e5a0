"""The registry of claim analyses (claim id -> function(runs frame, FigureMaker) -> Section; analyses
registered with extras=True also get the study extras, see report/frame.py) and the sections for
claims without runs or without a dedicated analysis."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

import pandas as pd

from bench.claims import CLAIMS  # plain data, no torch

from .common import arm_table, device_of, final_acc, run_links, seeds_per_arm, setup
from .figures import FigureMaker
from .frame import finals, tunes
from .section import Section
from .verdict import INCONCLUSIVE, NOT_MEASURED, Verdict

Analysis = Callable[..., Section]  # (runs frame, FigureMaker[, extras]) -> Section
Extras = dict[str, dict[str, Any]]  # extras[study][name]: see report/frame.py, "Extras"
ANALYSES: dict[str, Analysis] = {}
WANTS_EXTRAS: set[str] = set()  # claim ids whose analysis takes the extras as a third argument


def analysis(claim_id: str, extras: bool = False) -> Callable[[Analysis], Analysis]:
    """Register the analysis that answers `claim_id` (one per claim id from CLAIMS); extras=True: it is
    called as fn(df, figs, extras)."""
    if claim_id not in CLAIMS:
        raise KeyError(f"unknown claim id {claim_id!r}; valid: {', '.join(CLAIMS)}")

    def wrap(fn: Analysis) -> Analysis:
        ANALYSES[claim_id] = fn
        (WANTS_EXTRAS.add if extras else WANTS_EXTRAS.discard)(claim_id)
        return fn

    return wrap


def claim_studies(claim_id: str) -> list[str]:
    """The studies that settle a claim ("activation, optimizer" -> ["activation", "optimizer"])."""
    return [s.strip() for s in CLAIMS[claim_id][1].split(",") if s.strip()]


def commands(study: str, profile: str | None = None) -> list[str]:
    """The commands that would measure `study` (or measure it more thoroughly than `profile`)."""
    if profile == "full":
        return []
    if profile == "quick":
        return [f"bench study {study} --profile full   # on a GPU: 3+ seeds, full data"]
    return [f"make study NAME={study}", f"bench study {study} --profile quick"]


def start(claim_id: str, df: pd.DataFrame, study: str) -> tuple[Section, pd.DataFrame, pd.DataFrame]:
    """(section skeleton with Setup filled in, final runs, tune runs) for a claim settled by `study`."""
    runs = finals(df, study)
    profile = runs["profile"].iloc[0] if len(runs) else ""
    tune = tunes(df, study, profile)
    claim, studies, settles = CLAIMS[claim_id]
    sec = Section(
        claim_id,
        claim,
        claim_studies(claim_id),
        settles,
        Verdict(INCONCLUSIVE, "not decided"),
        setup=setup(study, runs, tune),
        runs=run_links(runs),
        commands=commands(study, profile),
        profile=profile,
        device=device_of(runs),
    )
    return sec, runs, tune


def not_measured(claim_id: str, df: pd.DataFrame | None = None) -> Section:
    claim, _, settles = CLAIMS[claim_id]
    studies = claim_studies(claim_id)
    exists = _study_exists
    why = "no runs of its study yet" if all(exists(s) for s in studies) else "its study does not exist yet"
    cmds = [c for s in studies for c in commands(s)]
    return Section(claim_id, claim, studies, settles, Verdict(NOT_MEASURED, f"{why}: run " + " / ".join(cmds)), commands=cmds)


def _study_exists(name: str) -> bool:
    try:
        from bench.study.files import studies_dir
    except ImportError:
        return False
    return (studies_dir() / f"{name}.toml").exists()


def generic(claim_id: str, df: pd.DataFrame, figs: FigureMaker) -> Section:
    """A claim with runs but no dedicated analysis yet: per-arm accuracy and curves, no verdict rule."""
    study = next(s for s in claim_studies(claim_id) if len(finals(df, s)))
    sec, runs, _ = start(claim_id, df, study)
    sec.tables.append(
        arm_table(
            "Final accuracy per arm (%)", runs, [("test acc", final_acc("test"), 100), ("train acc", final_acc("train"), 100)]
        )
    )
    sec.figures.append(
        figs.curves(
            f"{claim_id}-curves",
            f"{study}: learning curves",
            runs,
            [("val_acc", "validation accuracy"), ("train_loss", "training loss")],
        )
    )
    sec.verdict = Verdict(
        INCONCLUSIVE,
        "no decision rule is implemented for this claim yet (report/claims_*.py); the per-arm evidence is shown",
        n_seeds=seeds_per_arm(runs),
    )
    return sec


def _guarded(claim_id: str, df: pd.DataFrame, figs: FigureMaker, extras: Extras) -> Section:
    """Run a claim's analysis; if it fails, the report still comes out, with the error in that section
    (and the traceback on stderr). BENCH_DEBUG=1 raises instead."""
    try:
        if claim_id in WANTS_EXTRAS:
            return ANALYSES[claim_id](df, figs, extras)
        return ANALYSES[claim_id](df, figs)
    except Exception as exc:
        if os.environ.get("BENCH_DEBUG"):
            raise
        traceback.print_exc()
        sec = generic(claim_id, df, figs)
        sec.verdict = Verdict(
            INCONCLUSIVE,
            f"the analysis failed ({type(exc).__name__}: {exc}); per-arm evidence shown",
            n_seeds=sec.verdict.n_seeds,
        )
        return sec


def build_sections(df: pd.DataFrame, figs: FigureMaker, study: str | None = None, extras: Extras | None = None) -> list[Section]:
    """One section per claim id in CLAIMS order (only `study`'s claims when given); `extras`: the study
    extras (report/frame.py, "Extras"), {} when none were logged."""
    from . import (  # noqa: F401
        claims_activation,
        claims_init,
        claims_inputs,
        claims_localization,  # noqa: F401
        claims_noise,
        claims_optimizer,
        claims_schedule,  # (register their analyses)
        claims_speed,
        claims_training,
        claims_transfer,  # noqa: F401
    )

    out = []
    for claim_id in CLAIMS:
        studies = claim_studies(claim_id)
        if study is not None and study not in studies:
            continue
        measured = [s for s in studies if not df.empty and len(finals(df, s))]
        if not measured:
            sec = not_measured(claim_id, df)
        elif claim_id in ANALYSES:
            sec = _guarded(claim_id, df, figs, extras or {})
        else:
            sec = generic(claim_id, df, figs)
        sec.figures = [f for f in sec.figures if f is not None]
        out.append(sec)
    return out
