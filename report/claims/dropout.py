"""dropout: the overfitting gap over a grid of drop rates, and test-time scaling (classic vs inverted vs none)."""

from __future__ import annotations

import pandas as pd

from ..metrics import final_acc, gap, levels, mean_of, select, unless_diverged, values
from ..parts import compare, equivalent
from ..section import Section, fmt
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis

MARGIN = 0.02  # "equivalent" test accuracy: within 2 points


@analysis("dropout")
def dropout(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    sec.tables.append(
        arm_table(
            "Accuracy and overfitting gap per dropout rate (accuracy in %)",
            runs,
            [
                ("test acc", final_acc("test"), 100),
                ("train acc", final_acc("train"), 100),
                ("train − test gap", gap, 100),
                ("test loss", unless_diverged("test_loss"), 1),
            ],
        )
    )
    p0, p5 = select(runs, dropout="p0.0"), select(runs, dropout="p0.5")
    classic, unscaled = select(runs, dropout="p0.5-classic"), select(runs, dropout="p0.5-unscaled")
    parts = [
        compare(
            "dropout reduces overfitting (smaller train − test gap)",
            "p0.5 − p0.0, train − test accuracy gap",
            p5,
            p0,
            gap,
            expected=-1,
            unit="pts",
            scale=100,
        ),
        equivalent(
            "scaling at test time (classic) and in training (inverted) are equivalent",
            "classic − inverted (p=0.5), test accuracy",
            classic,
            p5,
            final_acc("test"),
            MARGIN,
        ),
        compare(
            "leaving out the scaling hurts the test-time model",
            "unscaled − inverted (p=0.5), test loss",
            unscaled,
            p5,
            unless_diverged("test_loss"),
            unit="nats",
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    m = {
        k: mean_of(values(v, f))
        for k, v, f in [
            ("acc5", p5, final_acc("test")),
            ("accu", unscaled, final_acc("test")),
            ("loss5", p5, lambda r: r["test_loss"]),
            ("lossu", unscaled, lambda r: r["test_loss"]),
            ("gap0", p0, gap),
            ("gap5", p5, gap),
        ]
    }
    sec.notes = [
        "Right on the mechanism and on both scalings: multiplying by the keep probability at test (classic) or "
        "dividing by it in training (inverted) give the same expected activation. Measured gap (train − test "
        f"accuracy) without dropout {fmt(m['gap0'] * 100)} pts, with p = 0.5 {fmt(m['gap5'] * 100)} pts.",
        "Forgetting the scaling makes test-time activations 1/(1−p) = 2× too large; in a ReLU net that mainly "
        "rescales the logits, which changes the confidence (the loss) more than the ranking of classes (accuracy). "
        f"Measured without scaling vs inverted: test accuracy {fmt(m['accu'] * 100)}% vs {fmt(m['acc5'] * 100)}%, "
        f"test loss {fmt(m['lossu'])} vs {fmt(m['loss5'])} nats.",
    ]
    rates = select(runs, dropout=tuple(a for a in levels(runs, "dropout") if "-" not in a))
    long = pd.DataFrame(
        [
            (r["factor.dropout"], name, f(r) * 100)
            for _, r in rates.iterrows()
            for name, f in (("test accuracy (%)", final_acc("test")), ("train − test gap (pts)", gap))
        ],
        columns=["dropout", "metric", "value"],
    )
    sec.figures += [
        figs.points(
            "dropout-rate",
            "Test accuracy and overfitting gap vs dropout rate",
            long,
            "dropout",
            "value",
            "",
            col="metric",
            join=True,
            sharey=False,
        ),
        figs.curves(
            "dropout-curves",
            "Train vs test accuracy: no dropout, p = 0.5 and its scalings",
            pd.concat([p0, p5, classic, unscaled]),
            [("train_acc", "train accuracy"), ("test_acc", "test accuracy")],
        ),
    ]
    return sec
