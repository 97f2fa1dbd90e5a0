"""resnet-depth: plain vs residual networks over depth: training and test error (the degradation problem) and the
first layer's gradient."""

from __future__ import annotations

import pandas as pd

from ..metrics import error, hist_at, mean_of, select, values
from ..parts import compare
from ..section import Section, fmt
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis


@analysis("resnet-depth")
def resnet_depth(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    depth = runs.groupby("factor.depth")["config.depth"].first().sort_values()
    shallow, deep = depth.index[0], depth.index[-1]
    sec.tables.append(
        arm_table(
            "Error (%) and first-layer gradient by depth",
            runs,
            [
                ("train error", error("train"), 100),
                ("test error", error("test"), 100),
                ("first-layer grad norm, init", hist_at("L01.grad_norm", 0), 1),
                ("first-layer grad norm, trained", hist_at("L01.grad_norm", -1), 1),
            ],
        )
    )
    p_deep, r_deep = select(runs, shortcut="plain", depth=deep), select(runs, shortcut="residual", depth=deep)
    parts = [
        compare(
            f"plain nets degrade with depth (training error rises from {shallow} to {deep})",
            f"plain {deep} − plain {shallow}, train error",
            p_deep,
            select(runs, shortcut="plain", depth=shallow),
            error("train"),
            unit="pts",
            scale=100,
        ),
        compare(
            f"residual nets train better than plain nets at depth {deep}",
            f"residual − plain ({deep}), train error",
            r_deep,
            p_deep,
            error("train"),
            expected=-1,
            unit="pts",
            scale=100,
        ),
        compare(
            f"…and generalise better at depth {deep}",
            f"residual − plain ({deep}), test error",
            r_deep,
            p_deep,
            error("test"),
            expected=-1,
            unit="pts",
            scale=100,
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    e = {
        (s, d): mean_of(values(select(runs, shortcut=s, depth=d), error("train"))) * 100
        for s in ("plain", "residual")
        for d in (shallow, deep)
    }
    sec.notes = [
        "The claim is about the degradation problem (He et al. 2016): deeper plain nets reach a higher *training* "
        "error, which is an optimisation failure, not overfitting. Measured training error "
        f"{shallow} → {deep}: plain {fmt(e[('plain', shallow)])}% → {fmt(e[('plain', deep)])}%, residual "
        f"{fmt(e[('residual', shallow)])}% → {fmt(e[('residual', deep)])}%.",
        "The identity shortcut lets each block default to the identity, so gradients reach the first layers "
        "undiminished by the depth; the first-layer gradient norm is shown per arm. Depths here are those the "
        f"profile ran ({', '.join(depth.index)}); the degradation grows with depth (the paper shows it from 20 layers on).",
    ]
    long = pd.DataFrame(
        [
            (r["factor.shortcut"], int(r["config.depth"]), split, error(s)(r) * 100)
            for _, r in runs.iterrows()
            for split, s in (("train error (%)", "train"), ("test error (%)", "test"))
        ],
        columns=["shortcut", "depth", "split", "error (%)"],
    )
    sec.figures += [
        figs.points(
            "resnet-error-depth",
            "Training and test error vs depth, plain vs residual",
            long,
            "depth",
            "error (%)",
            "error (%)",
            hue="shortcut",
            col="split",
            join=True,
        ),
        figs.curves(
            "resnet-curves",
            f"Learning curves at depth {deep}",
            pd.concat([p_deep, r_deep]),
            [("train_loss", "training loss"), ("test_acc", "test accuracy")],
        ),
    ]
    return sec
