"""Input preprocessing claims: input-normalization (raw vs scaled pixels over a learning-rate grid) and
pca (top-k principal components, PCA/ZCA whitening)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .analyses import analysis, start
from .claims_speed import target_for
from .common import (
    CHANCE,
    FAILED_ACC,
    arm_table,
    best_level,
    column,
    compare,
    failed,
    failure_part,
    final_acc,
    grid_table,
    learning_area,
    level_values,
    mean_of,
    run_links,
    select,
    to_target,
    values,
)
from .figures import FigureMaker
from .section import Section, Table, fmt, fmt_diff, fmt_p
from .stats import Diff, spearman_test, welch
from .verdict import Part, decide

NORMS = ("raw", "unit", "symmetric", "standardize")  # table order; raw (0..255) is the baseline
MARGIN = 0.02  # "without losing much accuracy": within 2 points
PIXELS = 3072  # input features of an unprojected CIFAR-10 image (3 x 32 x 32)


def _pct(runs: pd.DataFrame, metric=final_acc("test")) -> float:
    return mean_of(values(runs, metric)) * 100


# ============================================================================ input-normalization
@analysis("input-normalization")
def input_normalization(df: pd.DataFrame, figs: FigureMaker) -> Section:
    sec, runs, _ = start("input-normalization", df, "normalization")
    lrs = level_values(runs, "lr", "lr")
    present = list(dict.fromkeys(runs["factor.normalization"]))
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
        + ", ".join(f"{n} {fmt(_pct(at_best[n]))}%" for n in norms)
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


# ============================================================================ pca
def features(row: pd.Series) -> float:
    """Input features the MLP sees: pca_k for pca/pca_whiten, else all 3072 pixels."""
    return float(row["config.pca_k"]) if row.get("config.normalization") in ("pca", "pca_whiten") else float(PIXELS)


def per_epoch(row: pd.Series) -> float:
    """Training seconds per epoch (the projection onto the components is applied to every batch, so it counts)."""
    n = float(row.get("epochs_run") or 0)
    return float(row["train_seconds"]) / n if n > 0 and row.get("train_seconds") is not None else math.nan


def _kind(runs: pd.DataFrame, kind: str) -> pd.DataFrame:
    return runs[runs["config.normalization"] == kind]


def _whitening_table(runs: pd.DataFrame, target: float) -> Table:
    """Whitened vs unwhitened inputs of the same size (descriptive: uncorrected Welch tests, not in the verdict)."""
    pcs, std = _kind(runs, "pca"), _kind(runs, "standardize")
    rows = []
    for arm, sub in _kind(runs, "pca_whiten").groupby("arm", sort=False):
        k = int(features(sub.iloc[0]))
        rows.append((f"{arm} − pca-{k}", sub, pcs[pcs["config.pca_k"] == k], f"pca-{k} (unwhitened) was not run"))
    rows += [
        (f"{arm} − standardize", sub, std, "standardize was not run")
        for arm, sub in _kind(runs, "zca").groupby("arm", sort=False)
    ]
    body = []
    for label, a, b, missing in rows:
        if not len(b):
            body.append([label, "–", missing, "–", "–", run_links(a)])
            continue
        for name, metric, scale in (
            ("test accuracy (%)", final_acc("test"), 100),
            ("seconds to target", to_target(target, "seconds"), 1),
        ):
            va, vb = values(a, metric), values(b, metric)
            d = welch(va, vb)
            reached = lambda v, name=name: (
                f" (reached {sum(map(math.isfinite, v))}/{len(v)})" if name.startswith("seconds") else ""
            )  # noqa: E731
            body.append(
                [
                    label,
                    name,
                    f"{fmt(mean_of(va) * scale)}{reached(va)} vs {fmt(mean_of(vb) * scale)}{reached(vb)}",
                    fmt_diff(Part("", "", "", diff=d, scale=scale)),
                    fmt_p(d.p),
                    run_links(pd.concat([a, b])),
                ]
            )
    return Table(
        "Whitening (descriptive: uncorrected Welch tests, not part of the verdict)",
        ["comparison", "metric", "measured", "difference [95% CI]", "p", "runs (MLflow)"],
        body,
        "PCA whitening divides each component by the square root of its variance (plus a regulariser); ZCA "
        "then rotates back to pixel space. Both decorrelate; neither compresses.",
    )


@analysis("pca")
def pca(df: pd.DataFrame, figs: FigureMaker) -> Section:
    sec, runs, _ = start("pca", df, "pca")
    pcs = _kind(runs, "pca").assign(_k=lambda d: d["config.pca_k"].astype(float)).sort_values(["_k", "seed"])
    ref = _kind(runs, "standardize")
    target = target_for(runs)
    order = list(dict.fromkeys(pcs["arm"])) + [a for a in dict.fromkeys(runs["arm"]) if a not in set(pcs["arm"])]
    sec.tables.append(
        arm_table(
            f"Per arm: cost per epoch, time to {target:.0%} validation accuracy and accuracy (%)",
            runs,
            [
                ("seconds per epoch", per_epoch, 1),
                ("seconds to target", to_target(target, "seconds"), 1),
                ("epochs to target", to_target(target, "epoch"), 1),
                ("test acc", final_acc("test"), 100),
                ("val acc", final_acc("val"), 100),
            ],
            order=order,
            fixed=[("input features", features), ("parameters", column("n_params"))],
            note=f"target = 90% of the median arm's final validation accuracy, floored to a percent ({target:.0%}); seconds "
            "are training seconds (history.seconds), including the per-batch projection onto the components; a run "
            "that never reaches the target has no time (n shows it).",
        )
    )
    # The compression tested: the smallest k whose validation accuracy is within MARGIN of the best pca arm's.
    val = {k: mean_of(values(sub, final_acc("val"))) for k, sub in pcs.groupby("_k")}
    top = max(val.values(), default=math.nan)
    k_star = min((k for k, v in val.items() if v >= top - MARGIN), default=None)
    small = pcs[pcs["_k"] == k_star] if k_star is not None else pcs.iloc[:0]
    name = f"pca-{int(k_star)}" if k_star is not None else "pca-k"
    rho, p = spearman_test(list(pcs["_k"]), values(pcs, per_epoch))
    n_min = int(pcs.groupby("arm")["seed"].nunique().min()) if len(pcs) else 0
    reach = lambda sub: f"{sum(math.isfinite(v) for v in values(sub, to_target(target, 'seconds')))}/{len(sub)}"  # noqa: E731
    eq = welch(values(small, final_acc("test")), values(ref, final_acc("test")))
    parts = [
        Part(
            "fewer components cost less computation per epoch",
            "Spearman ρ over pca runs, k vs seconds per epoch",
            "Spearman rank correlation",
            diff=Diff(rho, math.nan, math.nan, rho, p, len(pcs) - 2, len(pcs), len(pcs)),
            n_min=n_min,
            runs=run_links(pcs),
            evidence=f"ρ = {fmt(rho)} over {len(pcs)} runs, k = " + ", ".join(str(int(k)) for k in sorted(val)),
        ),
        compare(
            f"{name} (the fewest components within {MARGIN * 100:g} pts of the best on validation) takes less time "
            f"per epoch than standardised pixels ({PIXELS} features)",
            f"{name} − standardize, seconds per epoch",
            small,
            ref,
            per_epoch,
            expected=-1,
            unit="s",
        ),
        compare(
            f"{name} reaches {target:.0%} validation accuracy in less time",
            f"{name} − standardize, seconds to target",
            small,
            ref,
            to_target(target, "seconds"),
            expected=-1,
            unit="s",
        ),
        Part(
            f"…without losing much accuracy ({name} within ±{MARGIN * 100:g} pts of standardised pixels)",
            f"{name} − standardize, test accuracy",
            f"equivalence: 95% interval within ±{MARGIN * 100:g} pts",
            diff=eq,
            margin=MARGIN,
            unit="pts",
            scale=100,
            n_min=min(small["seed"].nunique(), ref["seed"].nunique()),
            runs=run_links(pd.concat([small, ref])),
            evidence=f"{fmt(_pct(small))}% vs {fmt(_pct(ref))}%",
        ),
    ]
    parts[2].evidence += f" (reached: {reach(small)} vs {reach(ref)})"
    sec.verdict, sec.parts = decide(parts)
    sec.tables.append(_whitening_table(runs, target))
    cost = {a: mean_of(values(sub, per_epoch)) for a, sub in runs.groupby("arm")}
    sec.notes = [
        "Right about computation, with a condition: the first layer's cost is proportional to its input size, so an MLP "
        "on k components has fewer weights (parameters are in the table) — but only if the projection is computed once. "
        "Here it is applied to every batch (a 3072×k matrix product), so its cost is in the measured seconds: "
        + ", ".join(f"{a} {fmt(v)} s/epoch" for a, v in sorted(cost.items(), key=lambda kv: kv[1]))
        + ".",
        f"Whether it speeds learning is a separate question: fewer components drop the fine detail (the low-variance "
        f"directions), which caps accuracy. Measured: {name} (chosen as the fewest components within {MARGIN * 100:g} pts "
        f"of the best pca arm on validation) reaches {fmt(_pct(small))}% test accuracy vs {fmt(_pct(ref))}% for "
        "standardised pixels. k = 3072 keeps every component: a pure rotation, which an MLP's first layer can absorb.",
        "Whitening is not compression: it decorrelates and equalises the components' variance (amplifying the "
        "low-variance, mostly high-frequency ones, damped by a regulariser). Its effect is shown separately below.",
    ]
    long = pd.DataFrame(
        [
            (features(r), name_, f(r) * s)
            for _, r in pcs.iterrows()
            for name_, f, s in (
                ("test accuracy (%)", final_acc("test"), 100),
                ("seconds per epoch", per_epoch, 1),
                ("seconds to target", to_target(target, "seconds"), 1),
            )
        ],
        columns=["k", "metric", "value"],
    )
    others = runs[~runs.index.isin(pcs.index)]
    refs = pd.DataFrame(
        [
            (m, arm, mean_of(values(sub, f)) * s)
            for arm, sub in others.groupby("arm", sort=False)
            for m, f, s in (
                ("test accuracy (%)", final_acc("test"), 100),
                ("seconds per epoch", per_epoch, 1),
                ("seconds to target", to_target(target, "seconds"), 1),
            )
        ],
        columns=["metric", "label", "value"],
    )
    sec.figures += [
        figs.versus(
            "pca-vs-k",
            "PCA: accuracy, cost per epoch and time to target vs components kept",
            long,
            "k",
            "components kept k (log)",
            logx=True,
            refs=refs[np.isfinite(refs["value"])],
            caption="points: mean over seeds, bars: 95% t interval; horizontal lines: the means of the arms "
            "without a k (standardised pixels, ZCA, PCA-whitened)",
        ),
        figs.curves("pca-curves", "Validation accuracy per epoch", runs, [("val_acc", "validation accuracy")], hue_order=order),
    ]
    return sec
