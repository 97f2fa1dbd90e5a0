"""batchnorm: with vs without batch norm over learning rates and inits: failed runs, accuracy, speed and the spread
of gradient norms across layers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..frame import row_layers, series
from ..metrics import CHANCE, failed, final_acc, learning_area, level_values, levels, mean_of, select, values
from ..parts import failure_part, paired
from ..section import Section, Table, fmt, run_links
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis


def grad_spread(row: pd.Series) -> float:
    """log10(largest / smallest per-layer gradient norm), averaged over epochs: 0 = every layer alike."""
    names = row_layers(row, "L", "grad_norm")
    cols = [series(row, f"{n}.grad_norm") for n in names]
    spreads = [math.log10(max(v) / min(v)) for v in zip(*cols) if min(v) > 0 and all(map(math.isfinite, v))]
    return float(np.mean(spreads)) if spreads else math.nan


@analysis("batchnorm")
def batchnorm(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    bn, nobn = select(runs, norm="bn"), select(runs, norm="no-bn")
    lrs = level_values(runs, "lr", "lr")
    sec.tables.append(
        arm_table(
            "Per arm: accuracy (%), progress and gradient spread",
            runs,
            [
                ("test acc", final_acc("test"), 100),
                ("mean val acc over epochs", learning_area("val"), 100),
                ("log10 grad-norm spread", grad_spread, 1),
            ],
        )
    )
    rows = []
    for init in levels(runs, "init"):
        for norm in ("bn", "no-bn"):
            sub = select(runs, norm=norm, init=init)
            stable = [
                lr
                for lr in sorted(set(sub["factor.lr"]), key=lrs.get)
                if not any(failed(r) for _, r in select(sub, lr=lr).iterrows())
            ]
            n_bad = sum(failed(r) for _, r in sub.iterrows())
            rows.append([init, norm, fmt(lrs[stable[-1]]) if stable else "none", f"{n_bad}/{len(sub)}", run_links(sub)])
    sec.tables.append(
        Table(
            "Largest stable learning rate",
            ["init", "norm", "largest lr where every run trained", "failed runs (diverged or ≤ 15% test acc)", "runs (MLflow)"],
            rows,
        )
    )
    keys = ["factor.lr", "factor.init", "seed"]
    bad_bn, bad_no = sum(failed(r) for _, r in bn.iterrows()), sum(failed(r) for _, r in nobn.iterrows())
    parts = [
        failure_part(
            "batch norm makes training stable over more learning rates and inits", "bn − no-bn, fraction of failed runs", bn, nobn
        ),
        paired(
            "batch norm reaches a higher accuracy",
            "bn − no-bn, test accuracy (matched lr, init, seed)",
            bn,
            nobn,
            keys,
            final_acc("test"),
            unit="pts",
            scale=100,
        ),
        paired(
            "batch norm trains faster",
            "bn − no-bn, mean val accuracy over epochs (matched)",
            bn,
            nobn,
            keys,
            learning_area("val"),
            unit="pts",
            scale=100,
        ),
        paired(
            "batch norm evens out gradients across layers (no vanishing/exploding)",
            "bn − no-bn, log10 spread of per-layer gradient norms (matched)",
            bn,
            nobn,
            keys,
            grad_spread,
            expected=-1,
            unit="decades",
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    sec.notes = [
        f"Measured over {len(set(runs['factor.lr']))} learning rates × {len(set(runs['factor.init']))} inits: runs that failed "
        f"(diverged or stayed near chance) with BN {bad_bn}/{len(bn)}, without {bad_no}/{len(nobn)}; gradient-norm spread "
        f"across layers (log10 max/min) with BN {fmt(mean_of(values(bn, grad_spread)))}, without "
        f"{fmt(mean_of(values(nobn, grad_spread)))}.",
        "Why it tolerates large learning rates: after normalisation a layer's output no longer depends on its "
        "weights' scale, so a too-large step grows the weights and thereby shrinks its own effective step. "
        "BN does not remove the need to tune the learning rate; the table shows where each arm trains.",
    ]
    long = pd.DataFrame(
        [(r["factor.norm"], r["factor.init"], lrs[r["factor.lr"]], final_acc("test")(r) * 100) for _, r in runs.iterrows()],
        columns=["norm", "init", "lr", "test accuracy (%)"],
    )
    sec.figures += [
        figs.points(
            "bn-lr",
            "Test accuracy vs learning rate, with and without batch norm",
            long,
            "lr",
            "test accuracy (%)",
            "test accuracy (%)",
            hue="norm",
            col="init",
            join=True,
            caption=f"diverged runs count as chance ({CHANCE:.0%}); points: mean, bars: 95% t interval",
        ),
        figs.layer_profile(
            "bn-grad-layers",
            "Gradient norm per layer",
            runs.assign(bn=runs["factor.norm"] + " " + runs["factor.lr"]),
            row_layers(runs.iloc[0], "L", "grad_norm") if len(runs) else [],
            "grad_norm",
            "gradient norm (log)",
            hue="bn",
        ),
    ]
    return sec
