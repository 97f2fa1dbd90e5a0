"""leaky-vs-elu-noise: ReLU, Leaky ReLU and ELU MLPs with Gaussian input noise at evaluation only
(testX) or in training and evaluation (trainX): the accuracy each activation loses to the noise."""

from __future__ import annotations

import math

import pandas as pd

from ..frame import at_epoch, row_layers
from ..metrics import final_acc, mean_of, values
from ..parts import tested
from ..section import Section, Table, fmt, fmt_diff, run_links
from ..stats import interaction, welch
from ..tables import arm_table
from ..verdict import Part, decide
from . import Evidence, analysis

ACTS = ("relu", "leaky_relu", "elu")  # table order
MODES = {"test": "noise at evaluation only", "train": "noise in training and evaluation"}


def condition(row: pd.Series) -> tuple[str, float]:
    """(mode, noise std) of a run from its config: ("clean", 0), ("test", σ) or ("train", σ)."""
    train, test = float(row.get("config.input_noise") or 0.0), float(row.get("config.test_noise") or 0.0)
    return ("train", train) if train > 0 else ("test", test) if test > 0 else ("clean", 0.0)


def deep_negative(row: pd.Series) -> float:
    """ELU's saturated fraction (output below −0.9, i.e. input below about −2.3) in the first hidden layer after
    training, on the clean probe batch: how often units sit where ELU saturates; NaN for other activations."""
    names = row_layers(row, "A", "saturated")
    return at_epoch(row, f"{names[0]}.saturated", -1) if names and row.get("config.activation") == "elu" else math.nan


def _drop(clean: pd.DataFrame, noisy: pd.DataFrame):
    """clean − noisy test accuracy (Welch)."""
    return welch(values(clean, final_acc("test")), values(noisy, final_acc("test")))


@analysis("leaky-vs-elu-noise")
def leaky_vs_elu_noise(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    cond = [condition(r) for _, r in runs.iterrows()]
    runs = runs.assign(_mode=[c[0] for c in cond], _std=[c[1] for c in cond])
    acts = [a for a in ACTS if (runs["factor.activation"] == a).any()]
    of = lambda a, mode, std=0.0: runs[
        (runs["factor.activation"] == a)
        & (runs["_mode"] == mode)  # noqa: E731
        & (runs["_std"] == std)
    ]
    levels = sorted({(m, s) for m, s in zip(runs["_mode"], runs["_std"]) if m != "clean"}, key=lambda c: (c[0] != "test", c[1]))
    sec.tables.append(
        arm_table(
            "Per arm: test accuracy (%) under its noise, tuned lr",
            runs,
            [("test acc", final_acc("test"), 100), ("ELU units saturated (1st layer, clean probe) %", deep_negative, 100)],
            note="each arm has its own learning rate tuned on its (noisy) validation split; ELU saturated: fraction of "
            "first-layer ELU outputs below −0.9 on clean training images, after training. Diverged runs count as chance.",
        )
    )
    rows = []
    for mode, std in levels:
        cells: list = [f"{MODES[mode]}, σ = {fmt(std)}"]
        for a in acts:
            d = _drop(of(a, "clean"), of(a, mode, std))
            cells.append(fmt_diff(Part("", "", "", diff=d, unit="pts", scale=100)))
        sub = runs[((runs["_mode"] == mode) & (runs["_std"] == std)) | (runs["_mode"] == "clean")]
        rows.append(cells + [run_links(sub[sub["factor.activation"].isin(acts)])])
    sec.tables.append(
        Table(
            "Accuracy drop from each activation's clean arm (points; Welch 95% CI)",
            ["noise"] + [f"{a} drop" for a in acts] + ["runs (MLflow)"],
            rows,
            "drop = clean test accuracy − noisy test accuracy of the same activation (positive = lost).",
        )
    )
    parts = []
    for mode, std in levels:
        e1, e0, l1, l0 = of("elu", "clean"), of("elu", mode, std), of("leaky_relu", "clean"), of("leaky_relu", mode, std)
        d = interaction(*(values(x, final_acc("test")) for x in (e1, e0, l1, l0)))
        parts.append(
            tested(
                f"ELU loses less accuracy than Leaky ReLU ({MODES[mode]}, σ = {fmt(std)})",
                f"ELU drop − Leaky ReLU drop, test accuracy ({mode}, σ = {fmt(std)})",
                "Welch t-test on the difference of drops",
                d,
                e1,
                e0,
                l1,
                l0,
                expected=-1,
                unit="pts",
                scale=100,
                evidence=f"drops: ELU {fmt(_drop(e1, e0).diff * 100)}, Leaky ReLU {fmt(_drop(l1, l0).diff * 100)} pts",
            )
        )
    sec.verdict, sec.parts = decide(parts)
    worst = levels[-1] if levels else None
    drops = {a: _drop(of(a, "clean"), of(a, *worst)).diff * 100 for a in acts} if worst else {}
    sat = mean_of(values(runs[runs["factor.activation"] == "elu"], deep_negative)) * 100
    sec.notes = [
        "The reasoning does not hold as stated. Leaky ReLU's negative side has slope 0.01, so it passes 1% of a "
        "negative input's noise; ELU's slope there is e^x, close to 1 near zero, and it only flattens below about −2 "
        "(|ELU(x)| = 1 − e^x exceeds |0.01x| for every x down to about −100). So for the inputs units actually see, "
        "ELU passes more negative-side noise, not less; both pass positive-side noise unchanged. The ELU paper's "
        "argument (a noise-robust deactivation state) is about units driven far negative.",
        f"Measured: {fmt(sat)}% of ELU's first-layer outputs sit in its saturated range (below −0.9) on clean images "
        "after training, the only place its saturation can suppress noise. Accuracy lost"
        + (
            f" at the strongest noise ({MODES[worst[0]]}, σ = {fmt(worst[1])}): "
            + ", ".join(f"{a} {fmt(v)} pts" for a, v in drops.items())
            if worst
            else ": –"
        )
        + ". Verdict and parts above: whether ELU's drop is smaller is tested per noise level.",
        "Each arm has its own tuned learning rate, so a clean and a noisy arm of one activation differ in their lr too; "
        "the drop measures the whole pipeline (tuning included) under noise, which is the practical question.",
    ]
    long = []
    for _, r in runs.iterrows():
        for mode in ["test", "train"] if r["_mode"] == "clean" else [r["_mode"]]:  # clean is σ = 0 of both panels
            if mode in {m for m, _ in levels}:
                long.append((r["factor.activation"], r["_std"], MODES[mode], final_acc("test")(r) * 100))
    long = pd.DataFrame(long, columns=["activation", "noise std", "metric", "value"])
    sec.figures.append(
        figs.versus(
            "noise-acc",
            "Test accuracy vs input-noise strength per activation",
            long,
            "noise std",
            "Gaussian noise std (standardised inputs)",
            hue="activation",
            hue_order=acts,
            ylabel="test accuracy (%)",
            caption="σ = 0 is each activation's clean arm (in both panels); points: mean over seeds, "
            "bars: 95% t interval; diverged runs count as chance",
        )
    )
    return sec
