"""learning-rate: plain SGD over a log-spaced learning-rate grid × schedule (constant, step, cosine)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..figures import BAND, FigureMaker, legend_outside
from ..frame import long_history
from ..metrics import CHANCE, FAILED_ACC, best_level, diverged, final_acc, hist_at, level_values, levels, mean_of, select, values
from ..parts import compare
from ..section import Figure, Section, fmt
from ..stats import band
from ..tables import grid_table
from ..verdict import decide
from . import Evidence, analysis

DECAYS = ("step", "cosine")  # the schedules that start at the peak lr and decay it


def final_loss(row: pd.Series) -> float:
    """Final training loss (evaluated on the fixed training subset); missing for diverged runs."""
    v = row.get("train_loss")
    return math.nan if diverged(row) or v is None else float(v)


def roles(runs: pd.DataFrame, lrs: dict[str, float]) -> dict[str, str]:
    """The lr levels of the classic figure, from the constant-schedule runs: "large" = the largest lr whose runs all
    train (none diverged, mean test accuracy above FAILED_ACC), "small" = the smallest lr, "too high" = the next lr
    above "large" (if any)."""
    const = select(runs, schedule="constant")
    trains = [
        lv
        for lv in lrs
        if len(select(const, lr=lv))
        and not any(diverged(r) for _, r in select(const, lr=lv).iterrows())
        and mean_of(values(select(const, lr=lv), final_acc("test"))) > FAILED_ACC
    ]
    out = {"small": next(iter(lrs), None), "large": trains[-1] if trains else None}
    above = [lv for lv in lrs if out["large"] is not None and lrs[lv] > lrs[out["large"]]]
    out["too high"] = above[0] if above else None
    return out


@analysis("learning-rate")
def learning_rate(ev: Evidence) -> Section:
    sec, runs, _ = ev.start()
    figs = ev.figs
    lrs = level_values(runs, "lr", "lr")
    scheds = [s for s in ("constant", *DECAYS) if (runs["factor.schedule"] == s).any()]
    scheds += [s for s in levels(runs, "schedule") if s not in scheds]
    sec.tables += [
        grid_table(
            "Test accuracy (%) per learning rate and schedule",
            runs,
            ("lr", list(lrs)),
            ("schedule", scheds),
            final_acc("test"),
            100,
        ),
        grid_table(
            "Final training loss per learning rate and schedule",
            runs,
            ("lr", list(lrs)),
            ("schedule", scheds),
            final_loss,
            1,
            note="cross-entropy on the fixed training subset after the last epoch (missing for "
            "diverged runs, whose count is shown)",
        ),
    ]
    r = roles(runs, lrs)
    large, small = r["large"], r["small"]
    const = select(runs, schedule="constant")
    at = lambda lv, s: select(runs, lr=lv, schedule=s) if lv is not None else runs.iloc[:0]  # noqa: E731
    decayed = select(runs, schedule=tuple(s for s in scheds if s != "constant"))
    best_const = best_level(const, "factor.lr", final_acc("val"))
    best_decay = best_level(decayed, "arm", final_acc("val"))
    lab = lambda lv: f"{lrs[lv]:g}" if lv is not None else "–"  # noqa: E731
    parts = [
        compare(
            f"a large constant lr ({lab(large)}) makes fast early progress (vs the smallest, {lab(small)})",
            f"lr {lab(large)} − lr {lab(small)} (constant), val accuracy after epoch 1",
            at(large, "constant"),
            at(small, "constant"),
            hist_at("val_acc", 1),
            unit="pts",
            scale=100,
        )
    ]
    parts += [
        compare(
            f"…but settles less precisely than the same lr with {s} decay",
            f"constant − {s} (lr {lab(large)}), final training loss",
            at(large, "constant"),
            at(large, s),
            final_loss,
            unit="nats",
        )
        for s in scheds
        if s != "constant"
    ]
    parts += [
        compare(
            f"a small lr ({lab(small)}) is slow: still behind the large one at the end of the budget",
            f"lr {lab(small)} − lr {lab(large)} (constant), final training loss",
            at(small, "constant"),
            at(large, "constant"),
            final_loss,
            unit="nats",
        )
    ]
    if best_decay is not None and best_const is not None:
        parts.append(
            compare(
                "starting large and decaying gets both: the best decayed arm (on validation) ends more "
                "accurate than the best constant one",
                f"{best_decay} − {best_const}+constant, test accuracy",
                decayed[decayed["arm"] == best_decay],
                select(const, lr=best_const),
                final_acc("test"),
                unit="pts",
                scale=100,
            )
        )
    sec.verdict, sec.parts = decide(parts)
    loss = {s: mean_of(values(at(large, s), final_loss)) for s in scheds}
    n_div = {lv: int(select(runs, lr=lv)["status"].eq("diverged").sum()) for lv in lrs}
    sec.notes = [
        "Right, and the mechanism is the gradient noise: with a constant rate, SGD's iterates keep bouncing in a region "
        "whose size grows with the learning rate, so a large rate gets near a minimum quickly but cannot settle into "
        f"it; decaying the rate shrinks the bounce. Measured at lr {lab(large)} (the largest constant rate that trains): "
        "final training loss " + ", ".join(f"{s} {fmt(v)}" for s, v in loss.items()) + ".",
        "What the notes leave out: too large a rate does not merely fail to settle, it diverges (runs diverged per lr: "
        + ", ".join(f"{lab(lv)} {n}/{len(select(runs, lr=lv))}" for lv, n in n_div.items())
        + "). And whether the "
        "small rate is 'precise' cannot show within a fixed budget: it is still descending when training stops. "
        f"Best arms on validation: constant lr {lab(best_const)}, decayed {best_decay or '–'}.",
    ]
    order = [("too high", r["too high"], "constant"), ("high", large, "constant"), ("low", small, "constant")]
    best_arm = decayed[decayed["arm"] == best_decay] if best_decay is not None else decayed.iloc[:0]
    labelled = []
    for role, lv, s in order:
        sub = at(lv, s)
        if len(sub):
            labelled.append(sub.assign(role=f"{role} (lr {lab(lv)}, {s})"))
    if len(best_arm):
        labelled.append(
            best_arm.assign(role=f"good (lr {float(best_arm['config.lr'].iloc[0]):g}, {best_arm['factor.schedule'].iloc[0]})")
        )
    means = pd.DataFrame(
        {s: [mean_of(values(at(lv, s), final_acc("test"))) * 100 for lv in lrs] for s in scheds},
        index=pd.Index([lab(lv) for lv in lrs], name="learning rate"),
    )
    means.columns.name = "schedule"
    text = pd.DataFrame({s: [_cell(at(lv, s)) for lv in lrs] for s in scheds}, index=means.index)
    sec.figures += [
        loss_roles(
            figs,
            "lr-classic",
            "Too high, high, low and good learning rates (CS231n's figure, measured)",
            pd.concat(labelled) if labelled else runs.iloc[:0],
            hue="role",
            caption="roles from the constant-schedule runs: high = the largest lr whose runs all train, too high = "
            "the next lr up, low = the smallest lr, good = the best arm on validation; ✕ = diverged (the "
            "loss left the axis or became NaN); band = 95% t interval over seeds",
        ),
        figs.curves(
            "lr-schedules",
            f"The same large lr ({lab(large)}) with each schedule",
            at(large, tuple(scheds)),
            [("train_loss", "training loss"), ("val_acc", "validation accuracy"), ("lr", "learning rate")],
            hue="factor.schedule",
        ),
        heatmap(
            figs,
            "lr-heatmap",
            "Test accuracy (%) over learning rate × schedule",
            means,
            text,
            "test accuracy (%)",
            caption=f"mean over seeds; diverged runs count as chance ({CHANCE:.0%}); 'div' = diverged runs",
        ),
    ]
    return sec


def _cell(sub: pd.DataFrame) -> str:
    if not len(sub):
        return ""
    n_div = int((sub["status"] == "diverged").sum())
    return f"{mean_of(values(sub, final_acc('test'))) * 100:.1f}" + (f"\ndiv {n_div}/{len(sub)}" if n_div else "")


# ---------------------------------------------------------------------------- figures
def loss_roles(figs: FigureMaker, name: str, title: str, runs: pd.DataFrame, hue: str, caption: str = "") -> Figure | None:
    """CS231n's learning-rate figure from real runs: training loss per epoch on a linear axis cut at 1.5× the
    largest starting loss, one line and band per `hue`; a curve that leaves the axis (or a run that diverged)
    is drawn to the top edge and marked ✕."""
    if not figs.enabled or runs.empty:
        return None
    data = long_history(runs, ["train_loss"], by=hue)
    data = data[np.isfinite(data["value"].astype(float))]
    if data.empty:
        return None
    top = 1.5 * float(data.loc[data["epoch"] == 0, "value"].max() if (data["epoch"] == 0).any() else data["value"].max())
    fig, ax = plt.subplots(figsize=(8.6, 4.4))
    order = list(dict.fromkeys(runs[hue]))
    colours = dict(zip(order, sns.color_palette("colorblind", len(order))))
    for h in order:
        sub = data[data[hue] == h].assign(value=lambda d: d["value"].clip(upper=top))
        sns.lineplot(
            sub,
            x="epoch",
            y="value",
            errorbar=band,
            marker="o",
            markersize=4,
            color=colours[h],
            label=h,
            ax=ax,
            err_kws={"alpha": 0.12},
        )
        gone = sub[sub["value"] >= top]
        blown = runs[(runs[hue] == h) & (runs["status"] == "diverged")]
        if len(gone) or len(blown):
            e = float(gone["epoch"].min()) if len(gone) else float(blown["diverged_epoch"].min())
            ax.plot([e], [top], "X", color=colours[h], markersize=11, markeredgecolor="black", clip_on=False)
            ax.annotate("diverged", (e, top), textcoords="offset points", xytext=(6, -12), fontsize=8, color=colours[h])
    ax.set(xlabel="epoch", ylabel="training loss", ylim=(0, top * 1.02))
    ax.xaxis.get_major_locator().set_params(integer=True)
    legend_outside(ax, hue)
    return figs.save(fig, name, title, caption or BAND)


def heatmap(
    figs: FigureMaker,
    name: str,
    title: str,
    means: pd.DataFrame,
    labels: pd.DataFrame,
    cbar: str,
    caption: str = "",
    cmap: str = "viridis",
) -> Figure | None:
    """A rows × columns grid coloured by `means` (NaN: grey), each cell annotated with its `labels` text."""
    if not figs.enabled or means.empty:
        return None
    fig, ax = plt.subplots(figsize=(1.5 * means.shape[1] + 2.8, 0.62 * means.shape[0] + 1.6))
    sns.heatmap(
        means.astype(float),
        annot=labels.values,
        fmt="",
        cmap=cmap,
        cbar_kws={"label": cbar},
        linewidths=0.5,
        linecolor="white",
        ax=ax,
        annot_kws={"fontsize": 8},
    )
    ax.set_facecolor("0.85")
    ax.set(xlabel=means.columns.name or "", ylabel=means.index.name or "")
    ax.tick_params(axis="y", rotation=0)
    return figs.save(fig, name, title, caption)
