"""The tables analyses share: per-arm results with 95% intervals and run links, factor x factor grids, and the
Setup block (study, arms, seeds, profile, data, device, epochs, config, tuning) of every section."""

from __future__ import annotations

import math

import pandas as pd

from .frame import distinct, num
from .metrics import Metric, arms_in_order, select, values
from .section import Table, fmt, fmt_iv, run_links
from .stats import t_interval

DIVERGED_NOTE = (
    "Diverged runs are counted, not dropped: their accuracy counts as chance (0.10 for 10 classes, 0.20 for the "
    "5-class transfer target), their time to target as never; other metrics of a diverged run are missing and n shows it."
)
CONFIG_KEYS = [
    "model",
    "depth",
    "width",
    "activation",
    "init",
    "batchnorm",
    "dropout",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "batch_size",
    "normalization",
    "augment",
    "residual",
]


def _whole(x: float) -> str:
    """A count such as a parameter number: "2,103,818"; other numbers as fmt does."""
    return f"{int(x):,}" if isinstance(x, (int, float)) and math.isfinite(x) and float(x).is_integer() else fmt(x)


def arm_table(
    title: str,
    runs: pd.DataFrame,
    metrics: list[tuple[str, Metric, float]],
    by: str = "arm",
    note: str = DIVERGED_NOTE,
    order: list[str] | None = None,
    fixed: list[tuple[str, Metric]] | None = None,
) -> Table:
    """Per arm: seeds, diverged, then `fixed` columns (a property of the arm, e.g. its parameter count: the
    first run's value, no interval), then mean [95% CI] of each metric (scaled), then run links."""
    rows = []
    fixed = fixed or []
    for arm in order or arms_in_order(runs, by):
        sub = runs[runs[by] == arm]
        if sub.empty:
            continue
        n_div = int((sub["status"] == "diverged").sum())
        cells = [str(arm), str(sub["seed"].nunique()), f"{n_div}/{len(sub)}"]
        cells += [_whole(m(sub.iloc[0])) for _, m in fixed]
        cells += [fmt_iv(t_interval(values(sub, m)), scale) for _, m, scale in metrics]
        rows.append(cells + [run_links(sub)])
    return Table(
        title,
        [by, "seeds", "diverged"] + [label for label, _ in fixed] + [label for label, _, _ in metrics] + ["runs (MLflow)"],
        rows,
        note,
    )


def grid_table(
    title: str,
    runs: pd.DataFrame,
    rows: tuple[str, list[str]],
    cols: tuple[str, list[str]],
    metric: Metric,
    scale: float = 1.0,
    note: str = DIVERGED_NOTE,
) -> Table:
    """A factor × factor table: one row per level of factor `rows[0]` (in the order rows[1]), one column per level
    of `cols[0]`; each cell the mean [95% CI] of `metric` over the cell's seeds, with its diverged count."""
    (rf, rlevels), (cf, clevels) = rows, cols
    body = []
    for r in rlevels:
        cells: list = [r]
        for c in clevels:
            sub = select(runs, **{rf: r, cf: c})
            n_div = int((sub["status"] == "diverged").sum())
            cell = fmt_iv(t_interval(values(sub, metric)), scale) if len(sub) else "–"
            cells.append(cell + (f" ({n_div}/{len(sub)} diverged)" if n_div else ""))
        body.append(cells + [run_links(select(runs, **{rf: r}))])
    return Table(title, [f"{rf} \\ {cf}"] + clevels + ["runs (MLflow)"], body, note)


def constant_config(runs: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[str]]:
    """(["key=value" for keys constant across runs], [keys that vary by arm])."""
    fixed, varying = [], []
    for key in keys:
        col = f"config.{key}"
        if col not in runs:
            continue
        vals = runs[col].dropna().astype(str).unique()
        (fixed if len(vals) == 1 else varying).append(f"{key}={vals[0]}" if len(vals) == 1 else key)
    return fixed, varying


def tuning_text(runs: pd.DataFrame, tune: pd.DataFrame) -> str:
    """The tuning protocol and each arm's tuned learning rate (final runs carry bench.tuned_lr)."""
    tuned = num(runs, "tuned_lr")
    if tuned.notna().sum() == 0:
        lrs = sorted(set(num(runs, "config.lr").dropna()))
        return (
            "none: the study fixes the learning rate"
            + (f" (lr = {', '.join(f'{v:g}' for v in lrs)})" if lrs else "")
            + "; the claim is not a comparison of methods at their best lr"
        )
    per_arm = runs.assign(_lr=tuned).groupby("arm", sort=False)["_lr"].first()
    text = (
        "learning rate tuned per arm on the validation split (a spread start, then Optuna TPE; tuning seed), "
        "then fixed for the final runs"
    )
    if len(tune):
        tried = num(tune, "tune_lr")
        n = tune.groupby("arm").size()
        text += (
            f"; {int(n.min())}"
            + (f"–{int(n.max())}" if n.max() != n.min() else "")
            + f" tuning trials per arm, lr tried {fmt(tried.min())} to {fmt(tried.max())}"
        )
    return text + ". Tuned lr: " + ", ".join(f"{arm} {fmt(v)}" for arm, v in per_arm.items())


def setup(study: str, path: str, runs: pd.DataFrame, tune: pd.DataFrame) -> list[tuple[str, str]]:
    """The Setup block of a section: study (and its file), arms, seeds, profile, data, device, epochs, tuning."""
    fixed, varying = constant_config(runs, CONFIG_KEYS)
    seeds = runs.groupby("arm")["seed"].nunique()
    n_div = int((runs["status"] == "diverged").sum())
    sizes = {k: sorted(set(num(runs, f"n_{k}_used").dropna().astype(int))) for k in ("train", "val", "test")}
    epochs = sorted(set(num(runs, "config.epochs").dropna().astype(int)))
    return [
        ("Study", f"{study} ({path})" if path else study),
        ("Arms", ", ".join(arms_in_order(runs))),
        ("Seeds per arm", f"{seeds.min()}" + (f"–{seeds.max()}" if seeds.max() != seeds.min() else "")),
        ("Profile", ", ".join(sorted(set(runs["profile"])))),
        (
            "Data",
            "; ".join(distinct(runs, "data_source"))
            + " — images used: "
            + ", ".join(f"{k} {'/'.join(str(v) for v in vs)}" for k, vs in sizes.items()),
        ),
        ("Device", device_of(runs)),
        ("Epochs", "/".join(str(e) for e in epochs)),
        ("Fixed config", ", ".join(fixed) + (f"; varies by arm: {', '.join(varying)}" if varying else "")),
        ("Tuning", tuning_text(runs, tune)),
        (
            "Runs",
            f"{len(runs)} final runs ({n_div} diverged); {len(tune)} tuning runs; code "
            + ", ".join(distinct(runs, "git_commit")),
        ),
    ]


def device_of(runs: pd.DataFrame) -> str:
    return "; ".join(distinct(runs, "device"))
