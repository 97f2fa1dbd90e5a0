"""The init study's claims: zero-init, small-init-vanish, xavier-vs-he."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..frame import at_epoch, num, row_layers
from ..metrics import final_acc, hist_at, mean_of, select, values
from ..parts import against, check, compare
from ..section import Section, fmt
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis

SYMMETRIC, RANDOM = ("zero", "constant"), ("xavier", "he")
LAST = -1  # epoch index: after training


def _depths(runs: pd.DataFrame) -> list[str]:
    """Depth arms ordered shallow to deep (by config.depth)."""
    d = runs.groupby("factor.depth")["config.depth"].first().sort_values()
    return list(d.index)


def _hidden(row: pd.Series) -> list[str]:
    """Hidden weight layers with a distinct-unit count (all but the output layer)."""
    return sorted({c.split(".")[0] for c in row.index if c.endswith(".distinct_units") and not _nan(row[c])})


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def max_distinct(row: pd.Series) -> float:
    """Most distinct units in any hidden layer (1 = every unit of every layer identical)."""
    vals = [float(row[f"{n}.distinct_units"]) for n in _hidden(row)]
    return max(vals) if vals else math.nan


def distinct_fraction(row: pd.Series) -> float:
    """Distinct units / units, averaged over hidden layers."""
    vals = [float(row[f"{n}.distinct_units"]) / float(row[f"{n}.units"]) for n in _hidden(row)]
    return float(np.mean(vals)) if vals else math.nan


def std_ratio(epoch: int = 0):
    """log10(act std of the last hidden layer / of the first) at `epoch`: -1 = shrinks 10x over the depth."""

    def metric(row: pd.Series) -> float:
        names = row_layers(row, "A", "act_std")
        if not names:
            return math.nan
        first, last = at_epoch(row, f"{names[0]}.act_std", epoch), at_epoch(row, f"{names[-1]}.act_std", epoch)
        return math.log10(last / first) if first > 0 and last > 0 else (-math.inf if first > 0 else math.nan)

    return metric


def last_std(epoch: int):
    def metric(row: pd.Series) -> float:
        names = row_layers(row, "A", "act_std")
        return at_epoch(row, f"{names[-1]}.act_std", epoch) if names else math.nan

    return metric


def monotone_shrink(row: pd.Series) -> bool:
    names = row_layers(row, "A", "act_std")
    s = [at_epoch(row, f"{n}.act_std", 0) for n in names]
    return len(s) > 1 and all(b < a for a, b in zip(s, s[1:]))


@analysis("zero-init")
def zero_init(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    depth = _depths(runs)[0]
    sub = select(runs, depth=depth)
    sym, rnd = select(sub, init=SYMMETRIC), select(sub, init=RANDOM)
    sec.tables.append(
        arm_table(
            f"Hidden units and accuracy per init ({depth}); accuracy in %",
            sub,
            [
                ("test acc", final_acc("test"), 100),
                ("train acc", final_acc("train"), 100),
                ("max distinct units in a layer", max_distinct, 1),
                ("distinct units %", distinct_fraction, 100),
            ],
        )
    )
    sym_ok = sym[sym["status"] == "ok"]  # a diverged run has no final weights to compare
    n_one = int(sum(v == 1 for v in values(sym_ok, max_distinct)))
    parts = [
        check(
            "every hidden unit of a zero/constant-initialised layer stays identical to the others",
            "zero/constant runs: distinct units per hidden layer",
            sym,
            n_one == len(sym_ok) if len(sym_ok) else None,
            f"1 distinct unit in every hidden layer in {n_one}/{len(sym_ok)} finished zero/constant runs; "
            f"random inits keep {fmt(mean_of(values(rnd, distinct_fraction)) * 100)}% of units distinct",
        )
    ]
    for act in sorted(set(sub["factor.activation"])):
        parts.append(
            compare(
                f"zero/constant init learns less than random init ({act})",
                f"zero/constant − xavier/he, test accuracy ({act}, {depth})",
                select(sym, activation=act),
                select(rnd, activation=act),
                final_acc("test"),
                expected=-1,
                unit="pts",
                scale=100,
            )
        )
    worst = max(values(sym, final_acc("test")), default=math.nan)
    parts.append(
        check(
            "the symmetric network cannot learn: it stays within 5 points of chance (≤ 15%)",
            "zero/constant runs: highest test accuracy",
            sym,
            bool(worst <= 0.15),
            f"best zero/constant run reaches {fmt(worst * 100)}% test accuracy (chance 10%)",
        )
    )
    sec.verdict, sec.parts = decide(parts)
    by_init = sub.groupby("factor.init", sort=False).apply(lambda g: mean_of(values(g, final_acc("test"))), include_groups=False)
    sec.notes = [
        "Right: with all weights equal, every unit of a layer computes the same function and receives the same "
        f"gradient, so the units stay copies of each other: measured {n_one}/{len(sym_ok)} finished zero/constant runs end with "
        "exactly one distinct unit per hidden layer.",
        'Imprecise: "cannot learn". An all-zero net is stuck (every hidden activation and gradient is exactly 0; '
        "only the output biases move), but a constant-initialised net trains as a network one unit wide. "
        "Mean test accuracy by init: " + ", ".join(f"{k} {fmt(v * 100)}%" for k, v in by_init.items()) + " (chance 10%).",
    ]
    plot = pd.DataFrame(
        {
            "init": sub["factor.init"],
            "activation": sub["factor.activation"],
            "test accuracy (%)": [v * 100 for v in values(sub, final_acc("test"))],
            "distinct units (% of layer)": [v * 100 for v in values(sub, distinct_fraction)],
        }
    )
    sec.figures += [
        figs.points(
            "init-zero-acc",
            f"Test accuracy by init ({depth})",
            plot,
            "init",
            "test accuracy (%)",
            "test accuracy (%)",
            hue="activation",
        ),
        figs.points(
            "init-zero-units",
            f"Distinct hidden units after training ({depth})",
            plot,
            "init",
            "distinct units (% of layer)",
            "distinct units (% of layer)",
            hue="activation",
        ),
    ]
    return sec


@analysis("small-init-vanish")
def small_init_vanish(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    depth = _depths(runs)[0]
    sub = select(runs, init=("normal-0.01", "xavier", "he", "normal-1.0"), depth=depth)
    sec.tables.append(
        arm_table(
            f"Activation std per layer at initialisation and after training ({depth})",
            sub,
            [
                ("std layer 1, init", hist_at("A01.act_std", 0), 1),
                ("std last layer, init", last_std(0), 1),
                ("log10(last/first), init", std_ratio(0), 1),
                ("std last layer, trained", last_std(LAST), 1),
                ("test acc %", final_acc("test"), 100),
            ],
        )
    )
    parts = []
    for act in sorted(set(sub["factor.activation"])):
        small = select(sub, init="normal-0.01", activation=act)
        parts.append(
            against(
                f"N(0, 0.01²) shrinks {act} activations over the depth by more than 10x",
                f"log10(std last / std first) at init − (−1), normal-0.01+{act}",
                small,
                std_ratio(0),
                -1.0,
                expected=-1,
                unit="decades",
                evidence=f"log10 ratio {fmt(mean_of(values(small, std_ratio(0))))}",
            )
        )
        mono = [monotone_shrink(r) for _, r in small.iterrows()]
        parts.append(
            check(
                f"…and layer by layer ({act}): the std falls at every layer",
                f"normal-0.01+{act}: monotone",
                small,
                bool(mono) and all(mono),
                f"std falls at every layer in {sum(mono)}/{len(mono)} runs",
            )
        )
    sec.verdict, sec.parts = decide(parts)
    small = select(sub, init="normal-0.01")
    big_tanh_saturated = mean_of(values(select(sub, init="normal-1.0", activation="tanh"), hist_at("A01.saturated", 0)))
    sec.notes = [
        "Right: each layer multiplies the activations' std by about std_w·√fan_in = 0.01·√256 = 0.16 for tanh "
        f"(0.16/√2 = 0.11 for ReLU), so a 10-layer net ends with vanishing activations; measured last/first std at "
        f"init: 10^{fmt(mean_of(values(small, std_ratio(0))))} (mean over normal-0.01 runs). The histograms "
        "collapse into a spike at 0 and the gradients of the weights, proportional to these inputs, vanish too.",
        "The notes' other half is worth stating: N(0, 1) is the opposite failure: tanh units saturate at ±1 (first "
        f"layer saturated fraction {fmt(big_tanh_saturated * 100)}% at init) "
        "and ReLU activations explode layer by layer.",
    ]
    for act in sorted(set(sub["factor.activation"])):
        a = select(sub, activation=act)
        names = row_layers(a.iloc[0], "A", "act_std") if len(a) else []
        sec.figures += [
            figs.layer_profile(
                f"init-std-{act}",
                f"Activation std per layer, {act}, {depth}",
                a,
                names,
                "act_std",
                "activation std (log)",
                hue="factor.init",
            ),
            figs.histograms(
                f"init-hist-{act}",
                f"Activation histograms per layer at initialisation, {act}, {depth}",
                a,
                [f"{i}+{act}+{depth}" for i in ("normal-0.01", "xavier", "he", "normal-1.0")],
                names,
                "init",
            ),
        ]
    return sec


@analysis("xavier-vs-he")
def xavier_vs_he(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    depth = _depths(runs)[-1]
    sub = select(runs, init=("xavier", "he"), depth=depth)
    sec.tables.append(
        arm_table(
            f"Xavier vs He, {depth}",
            sub,
            [
                ("test acc %", final_acc("test"), 100),
                ("train acc %", final_acc("train"), 100),
                ("std layer 1, init", hist_at("A01.act_std", 0), 1),
                ("std last layer, init", last_std(0), 1),
                ("log10(last/first), init", std_ratio(0), 1),
            ],
        )
    )
    relu_x, relu_h = select(sub, init="xavier", activation="relu"), select(sub, init="he", activation="relu")
    parts = [
        compare(
            "He keeps the ReLU signal's scale through depth where Xavier shrinks it",
            f"he − xavier, log10(std last/first) at init (relu, {depth})",
            relu_h,
            relu_x,
            std_ratio(0),
            expected=1,
            unit="decades",
        ),
        compare(
            "He trains the deep ReLU net to higher test accuracy than Xavier",
            f"he − xavier, test accuracy (relu, {depth})",
            relu_h,
            relu_x,
            final_acc("test"),
            unit="pts",
            scale=100,
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    n_layers = int(num(relu_x, "config.depth").max()) if len(relu_x) else 0
    xs = [fmt(mean_of(values(g, m))) for g in (relu_x, relu_h) for m in (hist_at("A01.act_std", 0), last_std(0))]
    sec.notes = [
        "Wrong in the notes: they say He has the larger denominator. In fact He's variance 2/fan_in has the larger "
        "numerator — twice Xavier's 1/fan_in (std larger by √2) — because ReLU zeroes half its inputs and so halves "
        "the second moment at every layer.",
        f"Measured at initialisation ({depth}, ReLU): Xavier's std goes from {xs[0]} at layer 1 to {xs[1]} at the "
        f"last hidden layer (expected ×(1/√2) per layer: ×{fmt(2 ** (-(n_layers - 1) / 2))} over {n_layers} layers); "
        f"He's goes from {xs[2]} to {xs[3]}.",
        "With tanh (zero-centred, gain ≈ 1 near 0) Xavier is the matched init; He's factor 2 pushes tanh towards "
        "saturation. The tanh arms are shown for reference and are not part of the verdict.",
    ]
    for act in ("relu", "tanh"):
        a = select(sub, activation=act)
        if len(a):
            names = row_layers(a.iloc[0], "A", "act_std")
            sec.figures.append(
                figs.layer_profile(
                    f"init-xh-std-{act}",
                    f"Activation std per layer, Xavier vs He, {act}, {depth}",
                    a,
                    names,
                    "act_std",
                    "activation std (log)",
                    hue="factor.init",
                )
            )
    sec.figures.append(
        figs.curves(
            "init-xh-curves",
            f"Learning curves, Xavier vs He, {depth}",
            sub,
            [("train_acc", "train accuracy"), ("test_acc", "test accuracy")],
        )
    )
    return sec
