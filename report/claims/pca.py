"""pca: an MLP on the top-k principal components (k from about 32 to 3072) and on PCA/ZCA-whitened inputs: cost per
epoch, time to a target accuracy and accuracy, against standardised pixels."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics import column, final_acc, mean_of, pct, target_for, to_target, values
from ..parts import compare, equivalent, rank
from ..section import Section, Table, fmt, fmt_diff, fmt_p, run_links
from ..stats import welch
from ..tables import arm_table
from ..verdict import Part, decide
from . import Evidence, analysis

MARGIN = 0.02  # "without losing much accuracy": within 2 points
PIXELS = 3072  # input features of an unprojected CIFAR-10 image (3 x 32 x 32)


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
def pca(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
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
    reach = lambda sub: f"{sum(math.isfinite(v) for v in values(sub, to_target(target, 'seconds')))}/{len(sub)}"  # noqa: E731
    cost = rank(
        "fewer components cost less computation per epoch",
        "Spearman ρ over pca runs, k vs seconds per epoch",
        list(pcs["_k"]),
        values(pcs, per_epoch),
        pcs,
    )
    cost.evidence = f"ρ = {fmt(cost.diff.diff)} over {len(pcs)} runs, k = " + ", ".join(str(int(k)) for k in sorted(val))
    parts = [
        cost,
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
        equivalent(
            f"…without losing much accuracy ({name} within ±{MARGIN * 100:g} pts of standardised pixels)",
            f"{name} − standardize, test accuracy",
            small,
            ref,
            final_acc("test"),
            MARGIN,
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
        f"of the best pca arm on validation) reaches {fmt(pct(small))}% test accuracy vs {fmt(pct(ref))}% for "
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
