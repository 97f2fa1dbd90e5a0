"""convergence-speed: epochs and seconds to a fixed target accuracy, per arm, in every study that settles it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..frame import series
from ..metrics import arms_in_order, final_acc, mean_of, target_for, to_target, values
from ..parts import rank
from ..section import Section, fmt
from ..stats import spearman
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis

OWN = 0.95  # "reached its final accuracy": 95% of the run's own final validation accuracy


def to_own_final(row: pd.Series) -> float:
    """Epochs until validation accuracy first reaches 95% of the run's own final value (NaN if diverged)."""
    v, e = series(row, "val_acc"), series(row, "epoch")
    if row.get("status") != "ok" or not v:
        return math.nan
    goal = OWN * v[-1]
    return next((float(x) for x, y in zip(e, v) if y >= goal), math.nan)


def reached(target: float):
    return lambda r: 0.0 if math.isnan(to_target(target)(r)) else 1.0


@analysis("convergence-speed")
def convergence_speed(ev: Evidence) -> Section:
    studies = ev.measured()
    sec, _, _ = ev.start(studies[0])
    parts, notes = [], []
    for study in studies:
        s_sec, runs, _ = ev.start(study)
        if study != studies[0]:
            sec.setup += [(f"{k} ({study})", v) for k, v in s_sec.setup]
            sec.runs += s_sec.runs
            sec.study_links += s_sec.study_links
        target = target_for(runs)
        sec.tables.append(
            arm_table(
                f"{study}: time to {target:.0%} validation accuracy (and to 95% of its own final)",
                runs,
                [
                    ("reached target (fraction of runs)", reached(target), 1),
                    ("epochs to target", to_target(target, "epoch"), 1),
                    ("seconds to target", to_target(target, "seconds"), 1),
                    ("epochs to 95% of own final", to_own_final, 1),
                    ("final test acc %", final_acc("test"), 100),
                ],
                note=f"target = 90% of the median arm's final validation accuracy, floored to a percent ({target:.0%}); "
                "epochs and seconds are interpolated between epoch ends; runs that never reach the target (or "
                "diverge first) are counted in the first column and have no time."
                + (
                    " Runs trained packed (bench study --pack) share one clock, so they have no seconds."
                    if "packed" in runs and (runs["packed"].fillna(1) > 1).any()
                    else ""
                ),
            )
        )
        arms = arms_in_order(runs)
        per = {a: runs[runs["arm"] == a] for a in arms}
        fixed = [mean_of(values(per[a], to_target(target))) for a in arms]
        own = [mean_of(values(per[a], to_own_final)) for a in arms]
        acc = [mean_of(values(per[a], final_acc("test"))) for a in arms]
        ok = [i for i in range(len(arms)) if math.isfinite(fixed[i]) and math.isfinite(own[i])]
        part = rank(
            f"{study}: arms that reach a fixed target sooner also reach their own final accuracy sooner",
            f"{study}: Spearman ρ across arms, epochs to {target:.0%} vs epochs to 95% of own final",
            fixed,
            own,
            runs,
        )
        part.evidence = f"ρ = {fmt(part.diff.diff)} over {len(ok)} arms that reach the target"
        parts.append(part)
        rho_acc = spearman([fixed[i] for i in ok], [acc[i] for i in ok])
        fastest = arms[min(ok, key=lambda i: fixed[i])] if ok else "–"
        best = arms[int(np.nanargmax(acc))] if np.isfinite(acc).any() else "–"
        notes.append(
            f"{study}: fastest to {target:.0%}: {fastest}; most accurate at the end: {best}; rank correlation "
            f"between time to target and final test accuracy ρ = {fmt(float(rho_acc))} (−1 would mean faster "
            "is always better)."
        )
        sec.figures.append(
            ev.figs.curves(
                f"speed-{study}", f"{study}: validation accuracy over epochs", runs, [("val_acc", "validation accuracy")]
            )
        )
    sec.verdict, sec.parts = decide(parts)
    sec.notes = [
        "Right as a definition: convergence speed is how soon a model reaches the accuracy it will end at. "
        "What the definition does not say, and what is easy to read into it: converging faster is not "
        "converging to a better model. Both are measured per arm below."
    ] + notes
    return sec
