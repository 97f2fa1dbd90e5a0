"""Per-run metrics (one number from one row of the runs frame; diverged runs counted, never dropped) and the
one selector every analysis uses to pick runs by factor level."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from .frame import at_epoch, row_layers, series
from .stats import crossing

CHANCE = 0.10  # accuracy of guessing on CIFAR-10's 10 classes: a diverged run's accuracy when its record has no `chance`
FAILED_MARGIN = 0.05  # a run at or below chance + 5 points of test accuracy did not train
FAILED_ACC = CHANCE + FAILED_MARGIN  # that bound for 10 classes (15%), as the tables state it
Metric = Callable[[pd.Series], float]  # one number from one run (row of the runs frame)


def _f(v) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def chance(row: pd.Series) -> float:
    """The accuracy of guessing for this run's task (record field `chance`: 0.1 for 10 classes, 0.2 for the 5-class
    transfer target); CHANCE when the record predates the field."""
    c = _f(row.get("chance"))
    return c if math.isfinite(c) else CHANCE


def diverged(row: pd.Series) -> bool:
    return row.get("status") == "diverged"


def failed(row: pd.Series) -> bool:
    """Diverged, or ended at or below chance + FAILED_MARGIN test accuracy (did not train)."""
    return diverged(row) or final_acc("test")(row) <= chance(row) + FAILED_MARGIN


def select(runs: pd.DataFrame, **levels: str | tuple) -> pd.DataFrame:
    """Runs whose factor.<name> is the given level (or one of a tuple of levels), e.g. select(runs, lr="lr0.1");
    a factor the runs do not have selects nothing."""
    m = pd.Series(True, index=runs.index)
    for f, v in levels.items():
        col = f"factor.{f}"
        m &= runs[col].isin([v] if isinstance(v, str) else v) if col in runs else False
    return runs[m]


def levels(runs: pd.DataFrame, factor: str) -> list[str]:
    """The levels of factor.<factor> among the runs, in the order they were first run (the study file's order)."""
    col = f"factor.{factor}"
    return list(dict.fromkeys(runs.sort_values("start_time")[col].dropna())) if len(runs) and col in runs else []


def level_values(runs: pd.DataFrame, factor: str, key: str) -> dict[str, float]:
    """{level of factor.<factor>: its config.<key> as a float}, in ascending value (e.g. {"lr0.01": 0.01, ...})."""
    if not len(runs):
        return {}
    vals = runs.groupby(f"factor.{factor}")[f"config.{key}"].first().astype(float)
    return dict(sorted(vals.items(), key=lambda kv: kv[1]))


def values(runs: pd.DataFrame, metric: Metric) -> list[float]:
    return [metric(row) for _, row in runs.iterrows()]


def mean_of(xs: list[float]) -> float:
    a = np.asarray(xs, float)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def pct(runs: pd.DataFrame, metric: Metric | None = None) -> float:
    """Mean of `metric` (default: test accuracy) over runs, times 100."""
    return mean_of(values(runs, metric or final_acc("test"))) * 100


def best_level(runs: pd.DataFrame, by: str, metric: Metric) -> str | None:
    """The value of column `by` (e.g. "factor.lr", "arm") whose runs have the highest mean `metric` (ties: the first)."""
    means = {lvl: mean_of(values(sub, metric)) for lvl, sub in runs.groupby(by, sort=False)} if len(runs) else {}
    means = {k: v for k, v in means.items() if math.isfinite(v)}
    return max(means, key=means.get) if means else None


def arms_in_order(runs: pd.DataFrame, by: str = "arm") -> list[str]:
    """Arms in the order the runs frame lists them first (the study file's order for final runs)."""
    return list(dict.fromkeys(runs.sort_values("start_time")[by])) if len(runs) else []


def seeds_per_arm(runs: pd.DataFrame, by: str = "arm") -> int:
    """The fewest seeds any arm (value of `by`) has among the runs; 0 without runs."""
    return int(runs.groupby(by)["seed"].nunique().min()) if len(runs) else 0


# ---------------------------------------------------------------------------- metrics
def final_acc(split: str = "test") -> Metric:
    """Final accuracy on `split`; a diverged run counts as chance for its task."""
    return lambda row: chance(row) if diverged(row) else _f(row.get(f"{split}_acc"))


def error(split: str = "test") -> Metric:
    return lambda row: 1.0 - final_acc(split)(row)


def gap(row: pd.Series) -> float:
    """Train minus test accuracy (the overfitting gap); missing for diverged runs."""
    return math.nan if diverged(row) else _f(row.get("train_acc")) - _f(row.get("test_acc"))


def column(name: str) -> Metric:
    return lambda row: _f(row.get(name))


def unless_diverged(name: str) -> Metric:
    """A record field, missing for diverged runs (e.g. their test loss)."""
    return lambda row: math.nan if diverged(row) else _f(row.get(name))


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


def target_for(runs: pd.DataFrame) -> float:
    """A study's fixed target accuracy: 90% of the median over arms of the arms' mean final validation accuracy,
    rounded down to a whole percent (so about half the arms or more reach it)."""
    per_arm = runs.assign(_v=values(runs, final_acc("val"))).groupby("arm")["_v"].mean()
    return math.floor(0.9 * float(per_arm.median()) * 100) / 100 if len(per_arm) else math.nan


def learning_area(split: str = "val") -> Metric:
    """Mean `split` accuracy over epochs 1..E (area under the learning curve: how fast progress is made);
    epochs after a divergence count as chance."""

    def metric(row: pd.Series) -> float:
        accs = series(row, f"{split}_acc")[1:]
        planned = _f(row.get("config.epochs"))
        planned = int(planned) if math.isfinite(planned) else len(accs)
        c = chance(row)
        accs = [a if math.isfinite(a) else c for a in accs] + [c] * max(planned - len(accs), 0)
        return float(np.mean(accs)) if accs else math.nan

    return metric


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
