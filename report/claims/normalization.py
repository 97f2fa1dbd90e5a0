"""input-normalization: raw 0..255 pixels vs [0,1], [-1,1] and standardised inputs over a learning-rate grid:
failed runs, speed and accuracy, each input at its own best learning rate."""

from __future__ import annotations

import math

import pandas as pd

from ..metrics import (
    CHANCE,
    FAILED_ACC,
    best_level,
    failed,
    final_acc,
    learning_area,
    level_values,
    levels,
    pct,
    select,
    target_for,
    to_target,
)
from ..parts import compare, failure_part
from ..section import Section, Table, fmt, run_links
from ..tables import arm_table, grid_table
from ..verdict import decide
from . import Evidence, analysis

NORMS = ("raw", "unit", "symmetric", "standardize")  # table order; raw (0..255) is the baseline


@analysis("input-normalization")
def input_normalization(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    lrs = level_values(runs, "lr", "lr")
    present = levels(runs, "normalization")
    norms = [n for n in NORMS if n in present] + [n for n in present if n not in NORMS]
    best = {n: best_level(select(runs, normalization=n), "factor.lr", final_acc("val")) for n in norms}
    at_best = {n: select(runs, normalization=n, lr=best[n]) for n in norms}
    chosen = pd.concat(at_best.values())
    target = target_for(chosen)

    rows = []
    for n in norms:
        sub = select(runs, normalization=n)
        stable = [lv for lv in lrs if len(select(sub, lr=lv)) and not any(failed(r) for _, r in select(sub, lr=lv).iterrows())]
        n_div, n_bad = int((sub["status"] == "diverged").sum()), sum(failed(r) for _, r in sub.iterrows())
        rows.append(
            [
                n,
                f"{n_div}/{len(sub)}",
                f"{n_bad}/{len(sub)}",
                f"{lrs[stable[-1]]:g}" if stable else "none",
                f"{lrs.get(best[n], math.nan):g}",
                run_links(sub),
            ]
        )
    sec.tables += [
        Table(
            f"Stability over the learning-rate grid ({', '.join(f'{v:g}' for v in lrs.values())})",
            [
                "normalization",
                "diverged",
                f"failed (diverged or ≤ {FAILED_ACC:.0%} test acc)",
                "largest lr where every run trained",
                "best lr (on validation)",
                "runs (MLflow)",
            ],
            rows,
        ),
        grid_table("Test accuracy (%) over the grid", runs, ("normalization", norms), ("lr", list(lrs)), final_acc("test"), 100),
        arm_table(
            f"At each normalization's best learning rate (chosen on validation): accuracy (%) and time to "
            f"{target:.0%} validation accuracy",
            chosen,
            [
                ("test acc", final_acc("test"), 100),
                ("mean val acc over epochs", learning_area("val"), 100),
                ("epochs to target", to_target(target, "epoch"), 1),
                ("seconds to target", to_target(target, "seconds"), 1),
            ],
            note=f"target = 90% of the median of these arms' final validation accuracy, floored to a percent "
            f"({target:.0%}); seconds are cumulative training seconds (history.seconds), interpolated between "
            "epochs; a run that never reaches the target has no time (n shows it). Diverged runs count as "
            "chance accuracy.",
        ),
    ]
    raw = "raw" if "raw" in norms else norms[0]
    scaled = [n for n in reversed(norms) if n != raw]  # standardize first: the headline is the usual practice
    parts = [
        failure_part(
            f"{n} inputs train stably over more learning rates than raw pixels",
            f"{n} − raw, fraction of failed runs (diverged or ≤ {FAILED_ACC:.0%} test acc) over the lr grid",
            select(runs, normalization=n),
            select(runs, normalization=raw),
        )
        for n in scaled
    ]
    parts += [
        compare(
            f"{n} inputs learn faster than raw pixels (each at its best lr)",
            f"{n} − raw, mean val accuracy over epochs",
            at_best[n],
            at_best[raw],
            learning_area("val"),
            unit="pts",
            scale=100,
        )
        for n in scaled
    ]
    parts += [
        compare(
            f"{n} inputs end more accurate than raw pixels (each at its best lr)",
            f"{n} − raw, test accuracy",
            at_best[n],
            at_best[raw],
            final_acc("test"),
            unit="pts",
            scale=100,
        )
        for n in scaled
    ]
    sec.verdict, sec.parts = decide(parts)
    fails = {n: sum(failed(r) for _, r in select(runs, normalization=n).iterrows()) for n in norms}
    sec.notes = [
        "Right in direction for this network (an MLP without batch norm, He init): with raw 0..255 pixels the first "
        "layer's pre-activations are about 255× larger than with [0,1] inputs and, through ReLUs, so are the logits and "
        "the gradients, so a learning rate that suits scaled inputs makes raw inputs diverge. Failed runs over the grid: "
        + ", ".join(f"{n} {fails[n]}/{len(select(runs, normalization=n))}" for n in norms)
        + ".",
        "Imprecise: the notes treat scaling as one thing. [0,1] only rescales; [-1,1] also centres; standardisation "
        "centres and equalises channels. Much of raw pixels' problem is a learning-rate mismatch (a 255× smaller lr "
        "would undo most of the scale, not the missing centring), which is why each input is compared at its own best "
        "lr from the grid: "
        + ", ".join(f"{n} {lrs.get(best[n], math.nan):g}" for n in norms)
        + "; test accuracy there: "
        + ", ".join(f"{n} {fmt(pct(at_best[n]))}%" for n in norms)
        + ".",
    ]
    long = pd.DataFrame(
        [
            (r["factor.normalization"], lrs[r["factor.lr"]], name, f(r) * 100)
            for _, r in runs.iterrows()
            for name, f in (("test accuracy (%)", final_acc("test")), ("failed runs (%)", lambda r: float(failed(r))))
        ],
        columns=["normalization", "lr", "metric", "value"],
    )
    sec.figures += [
        figs.versus(
            "norm-lr",
            "Test accuracy and failed runs vs learning rate, per input scaling",
            long,
            "lr",
            "learning rate (log)",
            hue="normalization",
            logx=True,
            hue_order=norms,
            caption=f"diverged runs count as chance ({CHANCE:.0%}) accuracy and as failed; points: mean over "
            "seeds, bars: 95% t interval",
        ),
        figs.curves(
            "norm-curves",
            "Accuracy per epoch at each normalization's best learning rate",
            chosen,
            [("val_acc", "validation accuracy"), ("train_acc", "train accuracy")],
        ),
    ]
    return sec
