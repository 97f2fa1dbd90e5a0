"""transfer and fc-head: features pretrained on CIFAR-10 classes 0-4 (or ImageNet) reused for classes 5-9,
frozen under a linear or an MLP head, fine-tuned, or not used at all (from scratch), at several target sizes."""

from __future__ import annotations

import math

import pandas as pd

from ..figures import FigureMaker
from ..frame import num
from ..metrics import column, final_acc, mean_of, select, values
from ..parts import against, compare, equivalent
from ..section import Section, Table, fmt, fmt_diff, run_links
from ..stats import welch
from ..tables import arm_table, grid_table
from ..verdict import Part, decide
from . import Evidence, analysis

MODES = ("scratch", "linear", "mlp", "finetune")  # table and legend order
CHANCE5 = 0.2  # chance accuracy on the 5 target classes (records without a `chance` field)
MARGIN = 0.03  # linear and MLP heads "equivalent": test accuracy within 3 points
SOURCES = {"cifar5": "CIFAR-10 classes 0-4", "imagenet": "ImageNet (torchvision ResNet-18)"}


def _sizes(runs: pd.DataFrame) -> dict[str, int]:
    """{size level: images per class}, ascending."""
    vals = runs.groupby("factor.size")["config.per_class"].first().astype(int)
    return dict(sorted(vals.items(), key=lambda kv: kv[1]))


def _sources(runs: pd.DataFrame) -> list[str | None]:
    """The source levels present (None when the study has no source factor), cifar5 first."""
    if "factor.source" not in runs or runs["factor.source"].isna().all():
        return [None]
    return sorted(set(runs["factor.source"].dropna()), key=lambda s: (s != "cifar5", s))


def _of(runs: pd.DataFrame, source: str | None, **levels: str) -> pd.DataFrame:
    sub = runs if source is None else select(runs, source=source)
    return select(sub, **levels) if levels else sub


def _tag(source: str | None, many: bool) -> str:
    return f" [{source}]" if many and source else ""


def _chance(runs: pd.DataFrame) -> float:
    """Chance accuracy of the target task: the records' `chance`, else 5 classes' 20%."""
    vals = num(runs, "chance").dropna()
    return float(vals.mean()) if len(vals) else CHANCE5


def _prepare(ev: Evidence) -> tuple[Section, pd.DataFrame, dict[str, int], list[str | None]]:
    sec, runs, _ = ev.start()
    sizes = _sizes(runs)
    sec.tables.append(
        arm_table(
            "Per arm: target test accuracy (%), training time",
            runs,
            [
                ("test acc", final_acc("test"), 100),
                ("train acc", final_acc("train"), 100),
                ("training seconds", column("train_seconds"), 1),
                ("images / s", column("images_per_s"), 1),
            ],
            note="5 target classes (CIFAR-10 classes 5-9: dog, frog, horse, ship, truck; chance 20%); training seconds: the "
            "target training loop only (per-epoch evaluation and the one-off source pretraining excluded). Diverged "
            f"runs count as chance ({_chance(runs):.0%}).",
        )
    )
    sec.setup.insert(2, ("Transfer", _transfer_setup(runs, sizes)))
    return sec, runs, sizes, _sources(runs)


def _transfer_setup(runs: pd.DataFrame, sizes: dict[str, int]) -> str:
    """The source and target protocol in words, from the runs' configs."""

    def one(key: str) -> str:
        vals = sorted(set(runs[f"config.{key}"].dropna().astype(str))) if f"config.{key}" in runs else []
        return "/".join(vals) or "–"

    n_src = one("n_train")
    return (
        f"source {one('source')}: the same net trained on CIFAR-10 classes 0-4 "
        f"({'all 25,000' if n_src == '0' else n_src} images, {one('pretrain_epochs')} epochs at lr "
        f"{one('pretrain_lr')}, 0 = the arm's lr), once per seed and cached; target classes 5-9 (labels 0-4), "
        f"{', '.join(str(n) for n in sizes.values())} training images per class, validation and test from the "
        f"target classes only; linear/mlp freeze every source layer (BatchNorm statistics included)"
    )


def _figure(figs: FigureMaker, runs: pd.DataFrame, sizes: dict[str, int], source: str | None, many: bool):
    long = []
    for _, r in runs.iterrows():
        if r["factor.size"] in sizes:
            long.append((r["factor.transfer"], sizes[r["factor.size"]], "test accuracy (%)", final_acc("test")(r) * 100))
            long.append((r["factor.transfer"], sizes[r["factor.size"]], "training seconds", float(r.get("train_seconds"))))
    long = pd.DataFrame(long, columns=["transfer", "images per class", "metric", "value"])
    refs = pd.DataFrame([("test accuracy (%)", "chance (5 classes)", _chance(runs) * 100)], columns=["metric", "label", "value"])
    name = "transfer-size" + (f"-{source}" if many and source else "")
    return figs.versus(
        name,
        "Target accuracy and training time vs target-set size" + _tag(source, many),
        long,
        "images per class",
        "target training images per class (log scale)",
        hue="transfer",
        hue_order=[m for m in MODES if m in set(long["transfer"])],
        logx=True,
        refs=refs,
        caption="points: mean over seeds; bars: 95% t interval; linear and mlp train only their head "
        "on frozen features, finetune trains everything from the source's weights, scratch "
        "trains the same net from a random init",
    )


def _grids(runs: pd.DataFrame, sizes: dict[str, int], source: str | None, many: bool) -> list[Table]:
    modes = [m for m in MODES if (runs["factor.transfer"] == m).any()]
    levels = list(sizes)
    return [
        grid_table(
            f"Test accuracy (%) by transfer mode and target size{_tag(source, many)}",
            runs,
            ("transfer", modes),
            ("size", levels),
            final_acc("test"),
            100,
        ),
        grid_table(
            f"Training seconds by transfer mode and target size{_tag(source, many)}",
            runs,
            ("transfer", modes),
            ("size", levels),
            column("train_seconds"),
            1,
            note="wall-clock seconds of the target training loop (all epochs), mean [95% CI] over seeds",
        ),
    ]


@analysis("transfer")
def transfer(ev: Evidence) -> Section:
    sec, runs, sizes, sources = _prepare(ev)
    many = len(sources) > 1
    parts, notes, gaps = [], [], []
    small, large = (next(iter(sizes)), list(sizes)[-1]) if sizes else (None, None)
    for src in sources:
        t = _tag(src, many)
        runs_s = _of(runs, src)
        sec.tables += _grids(runs_s, sizes, src, many)
        for size, n in sizes.items():
            parts.append(
                compare(
                    f"frozen features + a linear head beat training from scratch at {n} images per class{t}",
                    f"linear − scratch, test accuracy ({size}){t}",
                    _of(runs, src, transfer="linear", size=size),
                    _of(runs, src, transfer="scratch", size=size),
                    final_acc("test"),
                    unit="pts",
                    scale=100,
                )
            )
            lin, fin = _of(runs, src, transfer="linear", size=size), _of(runs, src, transfer="finetune", size=size)
            d = welch(values(lin, final_acc("test")), values(fin, final_acc("test")))
            gaps.append(
                [
                    f"{size} ({n}/class){t}",
                    fmt_diff(Part("", "", "", diff=d, unit="pts", scale=100)),
                    fmt(mean_of(values(fin, column("train_seconds"))) / mean_of(values(lin, column("train_seconds")))),
                    run_links(pd.concat([lin, fin])),
                ]
            )
        if large is not None:
            lin, fin = _of(runs, src, transfer="linear", size=large), _of(runs, src, transfer="finetune", size=large)
            cost = compare(
                f"retraining only the head costs less time than fine-tuning everything ({sizes[large]}/class){t}",
                f"linear − finetune, training seconds ({large}){t}",
                lin,
                fin,
                column("train_seconds"),
                expected=-1,
                unit="s",
            )
            ratio = mean_of(values(lin, column("train_seconds"))) / mean_of(values(fin, column("train_seconds")))
            cost.evidence += f" (linear takes {fmt(ratio)}× fine-tuning's time)"
            parts.append(cost)
        src_name = SOURCES.get(src or "cifar5", src)
        acc = {m: {s: mean_of(values(_of(runs, src, transfer=m, size=s), final_acc("test"))) * 100 for s in sizes} for m in MODES}
        if small is not None:
            notes.append(
                f"Source {src_name}, measured test accuracy (linear head / fine-tune / scratch): "
                + "; ".join(
                    f"{n} images per class {fmt(acc['linear'][s])}% / {fmt(acc['finetune'][s])}% / {fmt(acc['scratch'][s])}%"
                    for s, n in sizes.items()
                )
                + "."
            )
        sec.figures.append(_figure(ev.figs, runs_s, sizes, src, many))
    sec.tables.append(
        Table(
            "Frozen linear head vs fine-tuning everything, per target size",
            ["size", "linear − finetune, test acc (pts, Welch 95% CI)", "fine-tune time / linear time", "runs (MLflow)"],
            gaps,
            "negative = fine-tuning is more accurate; the time ratio is of mean training seconds.",
        )
    )
    sec.verdict, sec.parts = decide(parts)
    sec.notes = (
        [
            "The claim holds where the target set is small: the source's features carry over and a linear head on them "
            "needs few images, while a net trained from scratch on those images has little to learn from. With thousands "
            "of images per class, training everything (from scratch or by fine-tuning) catches up or overtakes the frozen "
            "features, which were learned for other classes; the parts per size show where the crossover lies.",
            "The cost: the frozen features need no backward pass and no update, so the head trains in a fraction of the "
            "time of fine-tuning; the one-off cost of pretraining the source is not in any arm's time (it is shared by "
            "every target trial, and with ImageNet weights someone else paid it).",
            "The notes' \"new 10-way task\" is a 5-way task here (CIFAR-10's other half); the point is the same.",
        ]
        + notes
        + [
            "Every arm's learning rate is tuned on the target validation split (see Setup); the source trains "
            "once per seed at a fixed learning rate."
        ]
    )
    return sec


@analysis("fc-head")
def fc_head(ev: Evidence) -> Section:
    sec, runs, sizes, sources = _prepare(ev)
    level = _chance(runs)
    many = len(sources) > 1
    parts, rows = [], []
    small = next(iter(sizes), None)
    for src in sources:
        t = _tag(src, many)
        if small is not None:
            lin = _of(runs, src, transfer="linear", size=small)
            parts.append(
                against(
                    f"one linear layer on the frozen features turns them into useful class scores ({sizes[small]}/class){t}",
                    f"linear head − chance ({level:.0%}), test accuracy ({small}){t}",
                    lin,
                    final_acc("test"),
                    level,
                    unit="pts",
                    scale=100,
                    evidence=f"{fmt(mean_of(values(lin, final_acc('test'))) * 100)}% vs chance {level:.0%}",
                )
            )
        for size, n in sizes.items():
            lin, mlp = _of(runs, src, transfer="linear", size=size), _of(runs, src, transfer="mlp", size=size)
            part = equivalent(
                f"a hidden layer in the head adds little: MLP and linear heads on the same features agree "
                f"within ±{MARGIN * 100:g} pts ({n}/class){t}",
                f"mlp − linear, test accuracy ({size}){t}",
                mlp,
                lin,
                final_acc("test"),
                MARGIN,
            )
            d = part.diff
            parts.append(part)
            rows.append(
                [
                    f"{size} ({n}/class){t}",
                    fmt_diff(Part("", "", "", diff=d, unit="pts", scale=100)),
                    fmt(mean_of(values(mlp, column("train_seconds")))),
                    fmt(mean_of(values(lin, column("train_seconds")))),
                    run_links(pd.concat([lin, mlp])),
                ]
            )
        sec.figures.append(_figure(ev.figs, _of(runs, src), sizes, src, many))
    sec.tables.append(
        Table(
            "MLP head vs linear head on the same frozen features",
            ["size", "mlp − linear, test acc (pts, Welch 95% CI)", "mlp training s", "linear training s", "runs (MLflow)"],
            rows,
            f"equivalent when the whole interval lies within ±{MARGIN * 100:g} points.",
        )
    )
    sec.verdict, sec.parts = decide(parts)
    n_lin = _n_params(runs, "linear")
    sec.notes = [
        "Right as a description of the architecture: the convolutional stages and global pooling give a feature "
        "vector; the last fully connected layer maps it to one score per class, so its output count is the number of "
        f"classes (here 5: the same frozen features serve a new 5-way head). Parameters of a linear-head model, "
        f"features included: {n_lin}.",
        "What the measurement adds: whether the head needs to be more than one layer. If the MLP head is no better "
        "than the linear one, the features are already linearly separable for the new classes and the single FC layer "
        "is all the classifier needs; if it is clearly better, a non-linear head recovers what the frozen features do "
        "not expose linearly.",
    ]
    return sec


def _n_params(runs: pd.DataFrame, mode: str) -> str:
    vals = num(runs[runs["factor.transfer"] == mode], "n_params").dropna()
    return f"{int(vals.iloc[0]):,}" if len(vals) and math.isfinite(vals.iloc[0]) else "–"
