"""The activation study's claims: nonlinearity, sigmoid-saturation, zero-centered."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..figures import BAND
from ..frame import at_epoch, row_layers, series
from ..metrics import column, final_acc, learning_area, levels, mean_of, pct, select, values, with_layer_mean
from ..parts import check, compare, equivalent
from ..section import Section, fmt
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis

MARGIN = 0.02  # equivalence margin for "matches": 2 accuracy points


NAMED = ("linear", "identity", "sigmoid", "sigmoid_centered", "tanh", "relu")  # the arms the parts below compare


def _arms(runs: pd.DataFrame, *names: str) -> pd.DataFrame:
    return select(runs, activation=names)


def _others(runs: pd.DataFrame) -> list[str]:
    """Activations the study runs beyond the named ones (e.g. gelu, silu): shown for reference, not in the verdict."""
    return [a for a in levels(runs, "activation") if a not in NAMED]


def _acc(runs: pd.DataFrame, arm: str) -> float:
    return pct(_arms(runs, arm)) / 100


def grad_spread(epoch: int):
    """log10(first-layer gradient norm / last-layer gradient norm) at `epoch` (-1 = mean over epochs):
    how much the gradient shrinks on its way back to the input."""

    def metric(row: pd.Series) -> float:
        names = row_layers(row, "L", "grad_norm")
        if len(names) < 2:
            return math.nan
        first, last = series(row, f"{names[0]}.grad_norm"), series(row, f"{names[-1]}.grad_norm")
        pairs = [(f, l) for f, l in zip(first, last) if f > 0 and l > 0]
        if epoch >= 0:
            f, l = at_epoch(row, f"{names[0]}.grad_norm", epoch), at_epoch(row, f"{names[-1]}.grad_norm", epoch)
            return math.log10(f / l) if f > 0 and l > 0 else math.nan
        return float(np.mean([math.log10(f / l) for f, l in pairs])) if pairs else math.nan

    return metric


def same_sign(row: pd.Series) -> float:
    """Fraction of units whose inputs share one sign (so their per-example weight gradient does), averaged over
    the Linear layers fed by hidden activations (L02 on) and over epochs."""
    names = row_layers(row, "L", "same_sign")[1:]
    vals = [v for n in names for v in series(row, f"{n}.same_sign") if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def mean_saturated(epoch: int):
    def metric(row: pd.Series) -> float:
        vals = [at_epoch(row, f"{n}.saturated", epoch) for n in row_layers(row, "A", "saturated")]
        return mean_of(vals)

    return metric


@analysis("nonlinearity")
def nonlinearity(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    sub = _arms(runs, "linear", "identity", "relu")
    ident = _arms(runs, "identity")
    sec.tables.append(
        arm_table(
            "Linear classifier, deep identity net and deep ReLU net (accuracy in %)",
            sub,
            [
                ("test acc", final_acc("test"), 100),
                ("train acc", final_acc("train"), 100),
                ("collapse error (max rel.)", column("collapse_err"), 1),
            ],
        )
    )
    errs = values(ident[ident["status"] == "ok"], column("collapse_err"))  # diverged runs have no final weights
    worst = max((e for e in errs if math.isfinite(e)), default=math.nan)
    n_div = int((ident["status"] == "diverged").sum())
    parts = [
        check(
            "a deep net without activations is one linear map",
            "identity net: composed matrix vs outputs",
            ident,
            all(math.isfinite(e) and e < 1e-4 for e in errs) if errs else None,
            f"max relative error {fmt(worst)} (< 1e-4 required) over {len(errs)} finished runs"
            + (f" ({n_div} diverged, not checkable)" if n_div else ""),
        ),
        compare(
            "the activation is what lets the net learn more than a linear model",
            "relu − identity, test accuracy",
            _arms(runs, "relu"),
            ident,
            final_acc("test"),
            unit="pts",
            scale=100,
        ),
        equivalent(
            "the identity net's accuracy matches a single linear classifier",
            "identity − linear, test accuracy",
            ident,
            _arms(runs, "linear"),
            final_acc("test"),
            MARGIN,
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    sec.notes = [
        "Right: a composition of linear layers is a linear layer. Measured: multiplying the identity net's weight "
        f"matrices into one matrix reproduces its outputs to a relative error of {fmt(worst)}. Test accuracy: "
        f"identity net {fmt(_acc(runs, 'identity') * 100)}%, single linear softmax classifier "
        f"{fmt(_acc(runs, 'linear') * 100)}%, the same deep net with ReLU {fmt(_acc(runs, 'relu') * 100)}%.",
        "What depth without activations still changes is the optimisation (a product of matrices is trained, "
        "with its own tuned learning rate), not the set of functions the net can represent.",
    ]
    sec.figures.append(
        ev.figs.curves(
            "act-linear-curves",
            "Linear classifier vs deep identity net vs ReLU net",
            sub,
            [("train_acc", "train accuracy"), ("test_acc", "test accuracy")],
            hue="arm",
        )
    )
    return sec


@analysis("sigmoid-saturation")
def sigmoid_saturation(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    shown = with_layer_mean(_arms(runs, "sigmoid", "tanh", "relu", *_others(runs)), "A", "saturated", "mean_saturated")
    shown = with_layer_mean(shown, "A", "dead", "mean_dead")
    sub = _arms(shown, "sigmoid", "tanh", "relu")
    sec.tables.append(
        arm_table(
            "Saturation, gradient flow and accuracy",
            shown,
            [
                ("saturated % (init)", mean_saturated(0), 100),
                ("saturated % (trained)", mean_saturated(-1), 100),
                ("log10 grad first/last layer, init", grad_spread(0), 1),
                ("… mean over epochs", grad_spread(-1), 1),
                ("test acc %", final_acc("test"), 100),
            ],
            note="saturated: fraction of unit activations whose local gradient is below the study's threshold (ReLU: the "
            "zero-gradient side); gradient ratio: first over last weight layer's gradient norm on the probe batch."
            + (f" {', '.join(_others(runs))}: shown for reference, not part of the verdict." if _others(runs) else ""),
        )
    )
    sig = _arms(sub, "sigmoid")
    parts = []
    for other in ("tanh", "relu"):
        parts.append(
            compare(
                f"sigmoid's early layers receive smaller gradients than {other}'s",
                f"sigmoid − {other}, log10(first/last layer gradient norm), mean over epochs",
                sig,
                _arms(sub, other),
                grad_spread(-1),
                expected=-1,
                unit="decades",
            )
        )
    for other in ("tanh", "relu"):
        parts.append(
            compare(
                f"sigmoid nets learn less than {other} nets",
                f"sigmoid − {other}, test accuracy",
                sig,
                _arms(sub, other),
                final_acc("test"),
                expected=-1,
                unit="pts",
                scale=100,
            )
        )
    sec.verdict, sec.parts = decide(parts)
    g = {a: mean_of(values(_arms(sub, a), grad_spread(0))) for a in ("sigmoid", "tanh", "relu")}
    s = {a: mean_of(values(_arms(sub, a), mean_saturated(-1))) * 100 for a in ("sigmoid", "tanh", "relu")}
    sec.notes = [
        "Right: where σ(x) is near 0 or 1 its derivative σ(1−σ) is near 0, so a saturated unit passes almost no "
        f"gradient. Measured fraction of saturated units after training: sigmoid {fmt(s['sigmoid'])}%, "
        f"tanh {fmt(s['tanh'])}%, ReLU (zero side) {fmt(s['relu'])}%.",
        "What the notes leave out: even an unsaturated sigmoid passes at most 1/4 of the gradient (σ' ≤ 0.25), so the "
        "gradient shrinks layer after layer whether or not units saturate. Measured log10 ratio of first- to "
        f"last-layer gradient norm at initialisation: sigmoid {fmt(g['sigmoid'])}, tanh {fmt(g['tanh'])}, "
        f"ReLU {fmt(g['relu'])}.",
    ]
    names_a = row_layers(sub.iloc[0], "A", "saturated") if len(sub) else []
    names_l = row_layers(sub.iloc[0], "L", "grad_norm") if len(sub) else []
    sec.figures += [
        figs.curves(
            "act-saturated-epochs",
            "Saturated activations and dead units over epochs (mean over hidden layers)",
            shown,
            [("mean_saturated", "saturated fraction"), ("mean_dead", "dead-unit fraction")],
            hue="arm",
            caption="dead: units with ~0 local gradient on every probe image; " + BAND,
        ),
        figs.layer_profile(
            "act-saturated-layers", "Saturated fraction per layer", shown, names_a, "saturated", "saturated fraction", logy=False
        ),
        figs.layer_profile(
            "act-grad-layers", "Gradient norm per weight layer", shown, names_l, "grad_norm", "gradient norm (log)"
        ),
        figs.curves(
            "act-sat-curves",
            "Learning curves: sigmoid, tanh, ReLU",
            sub,
            [("train_acc", "train accuracy"), ("val_acc", "validation accuracy")],
        ),
    ]
    return sec


@analysis("zero-centered")
def zero_centered(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    sub = _arms(runs, "sigmoid", "sigmoid_centered", "tanh", "relu")
    sec.tables.append(
        arm_table(
            "One-sign gradients and learning speed",
            sub,
            [
                ("same-sign units %", same_sign, 100),
                ("mean val acc over epochs %", learning_area("val"), 100),
                ("test acc %", final_acc("test"), 100),
            ],
            note="same-sign units: fraction of units (Linear layers fed by hidden activations) whose inputs on a "
            "probe image all share one sign, so every entry of that unit's per-example weight gradient does too; "
            "averaged over probe images, layers and epochs. Mean val acc over epochs: the area under the learning curve.",
        )
    )
    sig, cen = _arms(sub, "sigmoid"), _arms(sub, "sigmoid_centered")
    parts = [
        compare(
            "always-positive sigmoid outputs make a unit's weight gradients share one sign",
            "sigmoid − sigmoid−0.5, same-sign units",
            sig,
            cen,
            same_sign,
            unit="pts",
            scale=100,
        ),
        compare(
            "zero-centred outputs learn faster",
            "sigmoid−0.5 − sigmoid, mean val accuracy over epochs",
            cen,
            sig,
            learning_area("val"),
            unit="pts",
            scale=100,
        ),
        compare(
            "zero-centred outputs reach a higher accuracy",
            "sigmoid−0.5 − sigmoid, test accuracy",
            cen,
            sig,
            final_acc("test"),
            unit="pts",
            scale=100,
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    ss = {a: mean_of(values(_arms(sub, a), same_sign)) * 100 for a in ("sigmoid", "sigmoid_centered", "tanh", "relu")}
    sec.notes = [
        "Right per example: a unit's weight gradient is δ·x, so when every input x is positive (sigmoid outputs) all "
        f"its entries share the sign of δ. Measured same-sign units: sigmoid {fmt(ss['sigmoid'])}%, sigmoid−0.5 "
        f"{fmt(ss['sigmoid_centered'])}%, tanh {fmt(ss['tanh'])}%.",
        "Imprecise: a mini-batch gradient sums δ·x over examples whose δ differ in sign, so the one-sign constraint "
        "binds each example's gradient, not the update. And ReLU outputs are never negative either "
        f"(same-sign {fmt(ss['relu'])}%), and ReLU nets train well (test accuracy {fmt(_acc(runs, 'relu') * 100)}% vs "
        f"sigmoid {fmt(_acc(runs, 'sigmoid') * 100)}%, sigmoid−0.5 {fmt(_acc(runs, 'sigmoid_centered') * 100)}%): "
        "the zig-zag is one cost among several, next to saturation and the sigmoid's gain of at most 1/4.",
    ]
    sec.figures += [
        figs.curves(
            "act-centered-curves",
            "Learning curves: sigmoid vs zero-centred variants",
            sub,
            [("train_loss", "training loss"), ("val_acc", "validation accuracy")],
        )
    ]
    return sec
