"""Claim analyses, one module per topic (report/claims/<topic>.py); each function registers itself with
@analysis("<claim id>") and every module here is imported by `discover()` (no import list to keep). An analysis
gets the Evidence of one results source and returns the claim's Section; claims without one use `generic`."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.claims import CLAIMS  # plain data, no torch

from .. import studies
from ..figures import FigureMaker
from ..frame import finals, tunes
from ..metrics import final_acc, seeds_per_arm
from ..section import Link, Section, run_links
from ..tables import arm_table, device_of, setup
from ..verdict import INCONCLUSIVE, Verdict

Extras = dict[str, dict[str, Any]]  # extras[study][name]: see report/frame.py, "Extras"


@dataclass
class Evidence:
    """What an analysis sees: one source's runs frame and extras, and the studies that answer the claim."""

    claim_id: str
    df: pd.DataFrame  # the runs frame (report/frame.py) of one results source
    figs: FigureMaker
    extras: Extras = field(default_factory=dict)
    studies: list[str] = field(default_factory=list)  # from the study files (report/studies.py), or a user's own study

    def measured(self) -> list[str]:
        """The claim's studies that have final runs here, in the study map's order."""
        return [s for s in self.studies if not self.df.empty and len(finals(self.df, s))]

    def start(self, study: str | None = None) -> tuple[Section, pd.DataFrame, pd.DataFrame]:
        """(section skeleton with Setup filled in, final runs, tune runs) of `study` (default: the first measured)."""
        study = study or next(iter(self.measured()), self.studies[0] if self.studies else "")
        return skeleton(self.claim_id, self.df, study, self.studies)

    def extra(self, name: str) -> dict[str, Any] | None:
        """The extra `name` (e.g. "trajectories") logged by one of the claim's studies, if any."""
        return next((self.extras[s][name] for s in self.studies if name in self.extras.get(s, {})), None)


Analysis = Callable[[Evidence], Section]
ANALYSES: dict[str, Analysis] = {}


def analysis(claim_id: str) -> Callable[[Analysis], Analysis]:
    """Register the analysis that answers `claim_id` (one per claim id of bench/claims.py)."""
    if claim_id not in CLAIMS:
        raise KeyError(f"unknown claim id {claim_id!r}; valid: {', '.join(CLAIMS)}")

    def wrap(fn: Analysis) -> Analysis:
        if ANALYSES.get(claim_id, fn) is not fn:
            raise ValueError(f"claim {claim_id!r} has two analyses: {ANALYSES[claim_id].__module__} and {fn.__module__}")
        ANALYSES[claim_id] = fn
        return fn

    return wrap


def discover() -> dict[str, Analysis]:
    """Import every module of this package (each registers its analyses) and return the registry."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return ANALYSES


def commands(study: str, profile: str | None = None) -> list[str]:
    """The commands that would measure `study` (or measure it more thoroughly than `profile`)."""
    name = studies.command_for(study)
    if profile == "full":
        return []
    if profile == "quick":
        return [f"bench study {name} --profile full   # on a GPU: 3+ seeds, full data"]
    return ([f"make study NAME={name}"] if studies.get(study) else []) + [f"bench study {name} --profile quick"]


def study_link(runs: pd.DataFrame, study: str) -> Link | None:
    """The study's runs table in the MLflow UI (from a run's link; None for runs without one, e.g. from a bundle)."""
    urls = [u for u in runs["url"] if isinstance(u, str) and "/runs/" in u] if "url" in runs else []
    # ?workflowType=machine_learning: MLflow 3 otherwise opens an experiment on its GenAI view (bench ui does the same)
    return Link(f"{study}: runs in MLflow", urls[0].rsplit("/", 1)[0] + "?workflowType=machine_learning") if urls else None


def skeleton(claim_id: str, df: pd.DataFrame, study: str, claim_studies: list[str]) -> tuple[Section, pd.DataFrame, pd.DataFrame]:
    """(section with Setup, run links and commands filled in, final runs, tune runs) for a claim settled by `study`."""
    runs = finals(df, study) if not df.empty else df
    profile = runs["profile"].iloc[0] if len(runs) else ""
    tune = tunes(df, study, profile) if not df.empty else df
    claim = CLAIMS[claim_id] if claim_id in CLAIMS else None
    link = study_link(runs, study) if len(runs) else None
    sec = Section(
        claim_id,
        claim.text if claim else "",
        list(claim_studies) or [study],
        claim.settles if claim else "",
        Verdict(INCONCLUSIVE, "not decided"),
        setup=setup(study, studies.path_of(study), runs, tune) if len(runs) else [],
        runs=run_links(runs),
        commands=commands(study, profile),
        profile=profile,
        device=device_of(runs) if len(runs) else "",
        study_links=[link] if link else [],
    )
    return sec, runs, tune


def generic(ev: Evidence, study: str | None = None) -> Section:
    """A claim (or a user's study) with runs but no dedicated analysis: per-arm accuracy and curves, no verdict rule."""
    sec, runs, _ = ev.start(study)
    name = study or (ev.measured() or ev.studies)[0]
    sec.tables.append(
        arm_table(
            "Final accuracy per arm (%)", runs, [("test acc", final_acc("test"), 100), ("train acc", final_acc("train"), 100)]
        )
    )
    sec.figures.append(
        ev.figs.curves(
            f"{ev.claim_id or name}-curves",
            f"{name}: learning curves",
            runs,
            [("val_acc", "validation accuracy"), ("train_loss", "training loss")],
        )
    )
    sec.verdict = Verdict(
        INCONCLUSIVE,
        "no decision rule is implemented for this claim yet (an analysis in report/claims/); the per-arm evidence is shown",
        n_seeds=seeds_per_arm(runs),
    )
    return sec
