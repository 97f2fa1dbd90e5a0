"""The optimizer study's claims: momentum, adagrad-per-parameter, adagrad-decay-rmsprop, update-size."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import studies, trajectories
from ..frame import num, row_layers, series
from ..metrics import final_acc, learning_area, levels, mean_of, select, values
from ..parts import against, check, compare
from ..section import Link, Section, fmt, short
from ..stats import loglog_slope, spearman
from ..tables import arm_table
from ..verdict import decide
from . import Evidence, analysis

HEALTHY_RATIO = 1e-3  # CS231n's rule of thumb for the update/weight ratio


def _arms(runs: pd.DataFrame, *names: str) -> pd.DataFrame:
    return select(runs, optimizer=names)


def _tuned(runs: pd.DataFrame) -> str:
    lr = runs.assign(_lr=num(runs, "tuned_lr").fillna(num(runs, "config.lr"))).groupby("arm", sort=False)["_lr"].first()
    return ", ".join(f"{a} {fmt(v)}" for a, v in lr.items())


@analysis("momentum")
def momentum(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    sub = _arms(runs, "sgd", "momentum", "nesterov")
    sec.tables.append(
        arm_table(
            "SGD vs momentum vs Nesterov, each at its own tuned learning rate (accuracy in %)",
            sub,
            [
                ("mean val acc over epochs", learning_area("val"), 100),
                ("test acc", final_acc("test"), 100),
                ("train acc", final_acc("train"), 100),
            ],
        )
    )
    sgd = _arms(sub, "sgd")
    parts = [
        compare(
            f"{m} makes faster progress than plain SGD",
            f"{m} − sgd, mean val accuracy over epochs",
            _arms(sub, m),
            sgd,
            learning_area("val"),
            unit="pts",
            scale=100,
        )
        for m in ("momentum", "nesterov")
    ]
    parts += [
        compare(
            f"{m} ends more accurate than plain SGD",
            f"{m} − sgd, test accuracy",
            _arms(sub, m),
            sgd,
            final_acc("test"),
            unit="pts",
            scale=100,
        )
        for m in ("momentum", "nesterov")
    ]
    sec.verdict, sec.parts = decide(parts)
    sec.notes = [
        "A fair comparison gives each optimizer its own tuned learning rate: " + _tuned(sub) + ". Heavy-ball "
        "momentum with β = 0.9 multiplies the long-run step by 1/(1−β) = 10, so its best lr is expected to be "
        "about 10× smaller than SGD's; compared at one shared lr, one of them would be handicapped."
    ]
    sec.figures.append(
        figs.curves(
            "opt-momentum-curves",
            "SGD vs momentum vs Nesterov (tuned lr each)",
            sub,
            [("train_loss", "training loss"), ("val_acc", "validation accuracy")],
        )
    )
    traj = ev.extra("trajectories")
    if traj and traj.get("surfaces"):
        sec.notes.append(trajectories.notes(traj))
        sec.tables.append(trajectories.table(traj))
        sec.figures.append(trajectories.figure(figs, "opt-trajectories", traj))
        if traj.get("run_id") and traj.get("url"):
            sec.runs.append(Link(short(traj["run_id"]), traj["url"]))
    else:
        owners = [s for s in ev.studies if studies.get(s) and "trajectories" in studies.get(s).extras] or ev.studies
        sec.notes.append(
            "Not measured yet: the damping of oscillations itself (the per-step path on an ill-conditioned "
            "surface); the per-epoch curves show progress, not the zig-zag within an epoch. "
            + " / ".join(f"`bench study {s}`" for s in owners)
            + " logs these paths (the `trajectories` extra, run tagged bench.extra=trajectories); rebuild the "
            "report after it."
        )
    return sec


def _bins(row: pd.Series) -> tuple[list[float], list[float]]:
    acc, step = row.get("adagrad.bin_sqrt_sum"), row.get("adagrad.bin_eff_lr")
    return (list(acc), list(step)) if isinstance(acc, list) and isinstance(step, list) else ([], [])


@analysis("adagrad-per-parameter")
def adagrad_per_parameter(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    ada = _arms(runs, "adagrad")
    ada = ada[ada["status"] == "ok"]
    rho = lambda r: spearman(*_bins(r))  # noqa: E731
    slope = lambda r: loglog_slope(*_bins(r))  # noqa: E731
    spread = lambda r: (lambda a, s: s[0] / s[-1] if len(s) > 1 and s[-1] > 0 else math.nan)(*_bins(r))  # noqa: E731
    sec.tables.append(
        arm_table(
            "AdaGrad: parameters in deciles of accumulated squared gradient",
            ada,
            [
                ("Spearman ρ(accumulated, step)", rho, 1),
                ("log-log slope", slope, 1),
                ("step ratio lowest/highest decile", spread, 1),
            ],
            note="Each run's weights are split into ten equal groups by their accumulated Σg²; per group, the mean √Σg² "
            "and the mean effective step lr/(√Σg² + 1e-8). ρ = −1: strictly inverse order.",
        )
    )
    rhos = values(ada, rho)
    sl = values(ada, slope)
    parts = [
        check(
            "the more gradient a parameter has accumulated, the smaller its step",
            "ρ ≤ −0.9 in every AdaGrad run",
            ada,
            bool(rhos) and all(math.isfinite(r) and r <= -0.9 for r in rhos),
            f"Spearman ρ per run: {', '.join(fmt(r) for r in rhos)}",
        ),
        against(
            "the relation is inverse (log-log slope below 0)",
            "log-log slope of step on √Σg², vs 0",
            ada,
            slope,
            0.0,
            expected=-1,
            evidence=f"mean slope {fmt(mean_of(sl) if sl else math.nan)} (−1 = exactly inverse)",
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    sec.notes = [
        "Right, and true by construction: AdaGrad's step for each parameter is lr/√(Σg²). The measurement shows how "
        f"wide the spread is: the decile with the least accumulated gradient takes steps {fmt(mean_of(values(ada, spread)))}× "
        "larger than the decile with the most.",
        'Imprecise: "frequently updated". AdaGrad responds to the accumulated squared magnitude, not to how often '
        "a parameter gets a gradient: many tiny gradients shrink the step less than a few large ones.",
    ]
    pts = pd.DataFrame(
        [(f"seed {r['seed']}", a, s) for _, r in ada.iterrows() for a, s in zip(*_bins(r))],
        columns=["run", "sqrt accumulated", "step"],
    )
    sec.figures.append(
        figs.scatter(
            "opt-adagrad-bins",
            "AdaGrad: effective step vs accumulated gradient (deciles)",
            pts,
            "sqrt accumulated",
            "step",
            "mean √Σg² per decile (log)",
            "mean effective step (log)",
            hue="run",
            logx=True,
            logy=True,
            lines=False,
            caption="one point per decile of parameters, per run",
        )
    )
    return sec


def eff_lr_decay(row: pd.Series) -> float:
    """log10(median effective lr at the last epoch / at epoch 1); epoch 0 is before any gradient."""
    v = series(row, "eff_lr_median")
    return math.log10(v[-1] / v[1]) if len(v) > 2 and v[1] > 0 and v[-1] > 0 else math.nan


def late_gain(row: pd.Series) -> float:
    """Validation accuracy gained over the second half of training."""
    v = series(row, "val_acc")
    return v[-1] - v[len(v) // 2] if len(v) > 2 and row.get("status") == "ok" else math.nan


@analysis("adagrad-decay-rmsprop")
def adagrad_decay(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    sub = _arms(runs, "adagrad", "rmsprop", "adam")
    sec.tables.append(
        arm_table(
            "Effective learning rate and late progress (accuracy in %)",
            sub,
            [
                ("log10 eff. lr last/epoch 1", eff_lr_decay, 1),
                ("val acc gained, 2nd half", late_gain, 100),
                ("test acc", final_acc("test"), 100),
            ],
            note="effective lr: median over weights of lr/(√v + 1e-8), v = the optimizer's squared-gradient statistic.",
        )
    )
    ada, rms = _arms(sub, "adagrad"), _arms(sub, "rmsprop")
    parts = [
        against(
            "AdaGrad's effective learning rate shrinks over training",
            "adagrad log10(eff. lr last/epoch 1), vs 0",
            ada,
            eff_lr_decay,
            0.0,
            expected=-1,
            unit="decades",
            evidence=f"{fmt(mean_of(values(ada, eff_lr_decay)))} decades",
        ),
        compare(
            "it shrinks more than RMSProp's",
            "adagrad − rmsprop, log10(eff. lr last/epoch 1)",
            ada,
            rms,
            eff_lr_decay,
            expected=-1,
            unit="decades",
        ),
        compare(
            "RMSProp keeps learning where AdaGrad slows",
            "rmsprop − adagrad, val accuracy gained in the 2nd half",
            rms,
            ada,
            late_gain,
            unit="pts",
            scale=100,
        ),
    ]
    sec.verdict, sec.parts = decide(parts)
    d = {a: mean_of(values(_arms(sub, a), eff_lr_decay)) for a in ("adagrad", "rmsprop", "adam")}
    sec.notes = [
        "Right in direction: AdaGrad's Σg² only grows, roughly in proportion to the number of steps, so its step "
        "falls like 1/√t — towards zero, but slowly. Measured change of the median effective lr from epoch 1 to the "
        f"end: AdaGrad ×{fmt(10 ** d['adagrad'])}, RMSProp ×{fmt(10 ** d['rmsprop'])}, Adam ×{fmt(10 ** d['adam'])}.",
        "Whether the shrinking step stops learning within a run depends on its length and on the tuned lr "
        f"({_tuned(sub)}): a larger tuned lr for AdaGrad offsets part of its decay.",
    ]
    sec.figures += [
        figs.curves(
            "opt-eff-lr",
            "Median effective learning rate over epochs",
            sub,
            [("eff_lr_median", "effective lr (log)")],
            logy=True,
            first_epoch=1,
        ),
        figs.curves(
            "opt-adaptive-curves",
            "AdaGrad vs RMSProp vs Adam",
            sub,
            [("train_loss", "training loss"), ("val_acc", "validation accuracy")],
        ),
    ]
    return sec


def update_points(row: pd.Series) -> list[tuple[str, float, float]]:
    """(layer, gradient norm before the step, update/weight ratio of the step) for each layer and epoch >= 1:
    the ratio is measured on the first step of epoch e, the probe gradient at the end of epoch e-1."""
    out = []
    for name in row_layers(row, "L", "update_ratio"):
        g, u = series(row, f"{name}.grad_norm"), series(row, f"{name}.update_ratio")
        out += [(name, gi, ui) for gi, ui in zip(g, u)]
    return out


def within_layer_slope(row: pd.Series) -> float:
    """Slope of log update ratio on log gradient norm after removing each layer's mean (so the layers'
    different weight norms do not count): 1 = step proportional to the gradient, 0 = independent of it."""
    pts = pd.DataFrame(update_points(row), columns=["layer", "g", "u"])
    pts = pts[(pts["g"] > 0) & (pts["u"] > 0)]
    if len(pts) < 4:
        return math.nan
    lg, lu = np.log10(pts["g"]), np.log10(pts["u"])
    x = lg - lg.groupby(pts["layer"]).transform("mean")
    y = lu - lu.groupby(pts["layer"]).transform("mean")
    return float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else math.nan


def median_ratio(row: pd.Series) -> float:
    pts = [u for _, _, u in update_points(row) if math.isfinite(u)]
    return float(np.median(pts)) if pts else math.nan


@analysis("update-size")
def update_size(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    sec.tables.append(
        arm_table(
            "Update size vs gradient size per optimizer",
            runs,
            [("slope log update/weight on log grad norm", within_layer_slope, 1), ("median update/weight", median_ratio, 1)],
            note=f"slope within each layer over epochs (1 = the step grows in proportion to the gradient, 0 = unrelated); "
            f"CS231n's rule of thumb for a healthy update/weight ratio is about {HEALTHY_RATIO:g}.",
        )
    )
    arms = levels(runs, "optimizer")
    parts = [
        against(
            f"with {o}, a larger gradient moves the weight further",
            f"{o}: within-layer slope, vs 0",
            _arms(runs, o),
            within_layer_slope,
            0.0,
            evidence=f"slope {fmt(mean_of(values(_arms(runs, o), within_layer_slope)))}",
        )
        for o in arms
    ]
    sec.verdict, sec.parts = decide(parts)
    sl = {o: mean_of(values(_arms(runs, o), within_layer_slope)) for o in arms}
    sec.notes = [
        "Right for plain SGD, where the step is lr·g. Not in general: momentum's step is a running sum of past "
        "gradients, and RMSProp/Adam divide by the gradient's running RMS, so their step is about lr whatever the "
        "gradient's size. Measured within-layer slopes: " + ", ".join(f"{o} {fmt(v)}" for o, v in sl.items()) + ".",
        "Update/weight ratios are shown against the ≈1e-3 rule of thumb: far above it the lr is too high, far below too low.",
    ]
    pts = pd.DataFrame(
        [(r["factor.optimizer"], g, u) for _, r in runs.iterrows() for _, g, u in update_points(r)],
        columns=["optimizer", "gradient norm", "update/weight"],
    )
    sec.figures.append(
        figs.scatter(
            "opt-update-vs-grad",
            "Update/weight ratio vs gradient norm (every layer and epoch)",
            pts,
            "gradient norm",
            "update/weight",
            "gradient norm (log)",
            "update/weight ratio (log)",
            hue="optimizer",
            logx=True,
            logy=True,
            caption="one point per weight layer and epoch, all seeds",
        )
    )
    return sec
