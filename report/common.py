"""Helpers every claim analysis shares: per-run metrics (diverged runs counted), per-arm
tables with intervals and run links, the Setup block, comparisons as verdict Parts."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from .frame import at_epoch, num, row_layers, series
from .section import Link, Table, fmt, fmt_iv, short
from .stats import Diff, crossing, fisher_less, one_sample, t_interval, welch
from .verdict import Part

CHANCE = 0.10  # accuracy a diverged run is counted at (10 classes): counted, never dropped
FAILED_ACC = 0.15  # a run at or below this test accuracy (chance + 5 points) did not train
Metric = Callable[[pd.Series], float]  # one number from one run (row of the runs frame)

DIVERGED_NOTE = (
    "Diverged runs are counted, not dropped: their accuracy counts as chance (0.10), their "
    "time to target as never; other metrics of a diverged run are missing and n shows it."
)


def diverged(row: pd.Series) -> bool:
    return row.get("status") == "diverged"


def failed(row: pd.Series) -> bool:
    """Diverged, or ended at or below FAILED_ACC test accuracy (did not train)."""
    return diverged(row) or final_acc("test")(row) <= FAILED_ACC


def select(runs: pd.DataFrame, **levels: str | tuple) -> pd.DataFrame:
    """Runs whose factor.<name> is the given level (or one of a tuple of levels), e.g. select(runs, lr="lr0.1")."""
    m = pd.Series(True, index=runs.index)
    for f, v in levels.items():
        m &= runs[f"factor.{f}"].isin([v] if isinstance(v, str) else v)
    return runs[m]


def level_values(runs: pd.DataFrame, factor: str, key: str) -> dict[str, float]:
    """{level of factor.<factor>: its config.<key> as a float}, in ascending value (e.g. {"lr0.01": 0.01, ...})."""
    if not len(runs):
        return {}
    vals = runs.groupby(f"factor.{factor}")[f"config.{key}"].first().astype(float)
    return dict(sorted(vals.items(), key=lambda kv: kv[1]))


def best_level(runs: pd.DataFrame, by: str, metric: Metric) -> str | None:
    """The value of column `by` (e.g. "factor.lr", "arm") whose runs have the highest mean `metric` (ties: the first)."""
    means = {lvl: mean_of(values(sub, metric)) for lvl, sub in runs.groupby(by, sort=False)} if len(runs) else {}
    means = {k: v for k, v in means.items() if math.isfinite(v)}
    return max(means, key=means.get) if means else None


def failure_part(assertion: str, label: str, a: pd.DataFrame, b: pd.DataFrame) -> Part:
    """Fisher exact test (one-sided) that runs `a` fail (diverge or do not train) less often than runs `b`."""
    bad_a, bad_b = sum(failed(r) for _, r in a.iterrows()), sum(failed(r) for _, r in b.iterrows())
    rate = bad_a / max(len(a), 1) - bad_b / max(len(b), 1)
    p = fisher_less(bad_a, len(a), bad_b, len(b))
    n_min = min(a["seed"].nunique() if len(a) else 0, b["seed"].nunique() if len(b) else 0)
    return Part(
        assertion,
        label,
        "Fisher exact test (one-sided)",
        diff=Diff(rate, math.nan, math.nan, math.nan, p, math.nan, len(a), len(b)),
        expected=-1,
        unit="pts",
        scale=100,
        n_min=n_min,
        evidence=f"failed {bad_a}/{len(a)} vs {bad_b}/{len(b)}",
        runs=run_links(pd.concat([a, b])),
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


def final_acc(split: str = "test") -> Metric:
    """Final accuracy on `split`; a diverged run counts as chance."""
    return lambda row: CHANCE if diverged(row) else _f(row.get(f"{split}_acc"))


def error(split: str = "test") -> Metric:
    return lambda row: 1.0 - final_acc(split)(row)


def gap(row: pd.Series) -> float:
    """Train minus test accuracy (the overfitting gap); missing for diverged runs."""
    return math.nan if diverged(row) else _f(row.get("train_acc")) - _f(row.get("test_acc"))


def column(name: str) -> Metric:
    return lambda row: _f(row.get(name))


def hist_at(metric: str, epoch: int) -> Metric:
    return lambda row: at_epoch(row, metric, epoch)


def to_target(target: float, x: str = "epoch", split: str = "val") -> Metric:
    """Epochs (x="epoch") or seconds (x="seconds") until `split` accuracy first reaches target
    (interpolated); never reached -> NaN (counted in the table's `reached` column). Seconds of a run
    trained packed with others (column `packed` > 1) are NaN: the pack shared one clock."""

    def metric(row) -> float:
        if x == "seconds" and _f(row.get("packed")) > 1:
            return math.nan
        return crossing(series(row, x), series(row, f"{split}_acc"), target)

    return metric


def _f(v) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def values(runs: pd.DataFrame, metric: Metric) -> list[float]:
    return [metric(row) for _, row in runs.iterrows()]


def run_links(runs: pd.DataFrame) -> list[Link]:
    return [Link(short(r["run_id"]), r["url"]) for _, r in runs.iterrows()]


def arms_in_order(runs: pd.DataFrame, by: str = "arm") -> list[str]:
    """Arms in the order the runs frame lists them first (the study file's order for final runs)."""
    return list(dict.fromkeys(runs.sort_values("start_time")[by])) if len(runs) else []


def seeds_per_arm(runs: pd.DataFrame, by: str = "arm") -> int:
    return int(runs.groupby(by)["seed"].nunique().min()) if len(runs) else 0


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


def _whole(x: float) -> str:
    """A count such as a parameter number: "2,103,818"; other numbers as fmt does."""
    return f"{int(x):,}" if isinstance(x, (int, float)) and math.isfinite(x) and float(x).is_integer() else fmt(x)


def compare(
    assertion: str,
    label: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: Metric,
    expected: int = 1,
    unit: str = "",
    scale: float = 1.0,
) -> Part:
    """A Welch t-test part: metric over runs `a` minus over runs `b`; the claim expects sign `expected`."""
    va, vb = values(a, metric), values(b, metric)
    d = welch(va, vb)
    n_min = min(a["seed"].nunique() if len(a) else 0, b["seed"].nunique() if len(b) else 0)
    return Part(
        assertion,
        label,
        "Welch t-test",
        diff=d,
        expected=expected,
        unit=unit,
        scale=scale,
        n_min=n_min,
        evidence=f"{fmt(mean_of(va) * scale)} vs {fmt(mean_of(vb) * scale)}",
        runs=run_links(pd.concat([a, b])),
    )


def check(assertion: str, label: str, runs: pd.DataFrame, passed: bool | None, evidence: str) -> Part:
    """An exact check over every run in `runs` (no p-value); passed=None: no run could be checked
    (e.g. all diverged), which counts as within noise."""
    n_min = int(runs.groupby("arm")["seed"].nunique().min()) if len(runs) else 0
    return Part(assertion, label, "exact check", check=passed, evidence=evidence, n_min=n_min, runs=run_links(runs))


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
    text = "learning rate tuned per arm on the validation split (Optuna TPE, tuning seed), then fixed for the final runs"
    if len(tune):
        tried = num(tune, "tune_lr")
        n = tune.groupby("arm").size()
        text += (
            f"; {int(n.min())}"
            + (f"–{int(n.max())}" if n.max() != n.min() else "")
            + f" tuning trials per arm, lr tried {fmt(tried.min())} to {fmt(tried.max())}"
        )
    return text + ". Tuned lr: " + ", ".join(f"{arm} {fmt(v)}" for arm, v in per_arm.items())


def setup(study: str, runs: pd.DataFrame, tune: pd.DataFrame) -> list[tuple[str, str]]:
    """The Setup block of a section: study, arms, seeds, profile, data, device, epochs, tuning."""
    fixed, varying = constant_config(runs, CONFIG_KEYS)
    seeds = runs.groupby("arm")["seed"].nunique()
    n_div = int((runs["status"] == "diverged").sum())
    sizes = {k: sorted(set(num(runs, f"n_{k}_used").dropna().astype(int))) for k in ("train", "val", "test")}
    epochs = sorted(set(num(runs, "config.epochs").dropna().astype(int)))
    return [
        ("Study", f"{study} (studies/{study}.toml)"),
        ("Arms", ", ".join(arms_in_order(runs))),
        ("Seeds per arm", f"{seeds.min()}" + (f"–{seeds.max()}" if seeds.max() != seeds.min() else "")),
        ("Profile", ", ".join(sorted(set(runs["profile"])))),
        (
            "Data",
            "; ".join(sorted(set(runs["data_source"].dropna().astype(str))))
            + " — images used: "
            + ", ".join(f"{k} {'/'.join(str(v) for v in vs)}" for k, vs in sizes.items()),
        ),
        ("Device", "; ".join(sorted(set(runs["device"].dropna().astype(str))))),
        ("Epochs", "/".join(str(e) for e in epochs)),
        ("Fixed config", ", ".join(fixed) + (f"; varies by arm: {', '.join(varying)}" if varying else "")),
        ("Tuning", tuning_text(runs, tune)),
        (
            "Runs",
            f"{len(runs)} final runs ({n_div} diverged); {len(tune)} tuning runs; code "
            + ", ".join(sorted(set(runs["git_commit"].dropna().astype(str)))),
        ),
    ]


def device_of(runs: pd.DataFrame) -> str:
    devs = sorted(set(runs["device"].dropna().astype(str))) if "device" in runs else []
    return "; ".join(devs)


def mean_of(xs: list[float]) -> float:
    a = np.asarray(xs, float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def learning_area(split: str = "val") -> Metric:
    """Mean `split` accuracy over epochs 1..E (area under the learning curve: how fast progress is made);
    epochs after a divergence count as chance."""

    def metric(row: pd.Series) -> float:
        accs = series(row, f"{split}_acc")[1:]
        planned = _f(row.get("config.epochs"))
        planned = int(planned) if math.isfinite(planned) else len(accs)
        accs = [a if math.isfinite(a) else CHANCE for a in accs] + [CHANCE] * max(planned - len(accs), 0)
        return float(np.mean(accs)) if accs else math.nan

    return metric


def paired(
    assertion: str,
    label: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    keys: list[str],
    metric: Metric,
    expected: int = 1,
    unit: str = "",
    scale: float = 1.0,
) -> Part:
    """Paired t-test: metric(a) - metric(b) over runs matched on `keys` (e.g. lr, init, seed)."""
    va = {tuple(r[k] for k in keys): metric(r) for _, r in a.iterrows()}
    vb = {tuple(r[k] for k in keys): metric(r) for _, r in b.iterrows()}
    diffs = [va[k] - vb[k] for k in va if k in vb]
    d = one_sample(diffs, 0.0)
    n_min = min(a["seed"].nunique() if len(a) else 0, b["seed"].nunique() if len(b) else 0)
    return Part(
        assertion,
        label,
        f"paired t-test over {len(diffs)} matched runs",
        diff=d,
        expected=expected,
        unit=unit,
        scale=scale,
        n_min=n_min,
        evidence=f"mean paired difference {fmt(mean_of(diffs) * scale)}",
        runs=run_links(pd.concat([a, b])),
    )


def with_layer_mean(runs: pd.DataFrame, prefix: str, stat: str, name: str, first: int = 1, last_off: int = 0) -> pd.DataFrame:
    """A copy of runs with `history.<name>`: per epoch, `stat` averaged over layers <prefix>first.. (skipping
    the last `last_off` layers) — e.g. the mean saturated fraction of all hidden layers per epoch."""
    out = []
    for _, r in runs.iterrows():
        names = row_layers(r, prefix, stat)
        names = names[first - 1 : len(names) - last_off]
        lists = [series(r, f"{n}.{stat}") for n in names]
        rows = [np.asarray(v, float) for v in zip(*lists)]
        out.append([float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for v in rows])
    return runs.assign(**{f"history.{name}": out})
