"""The runs DataFrame: the one table every part of the report reads.

One row per trial run (a child run of a `bench study` execution that finished and
logged its `record.json`). Columns:

Identity and provenance (from the MLflow run and its `bench.*` tags)
    run_id          str    MLflow run id
    experiment_id   str    MLflow experiment id (experiment "bench/<study>")
    run_name        str    e.g. "final he+relu+d30 seed=1"
    url             str    MLflow UI link: <ui>/#/experiments/<experiment_id>/runs/<run_id>
    start_time      int    run start, ms since the epoch (the newest duplicate wins)
    study           str    study name (tag bench.study), e.g. "init"
    arm             str    arm name, the factor levels joined by "+", e.g. "he+relu+d30"
    factor.<name>   str    this arm's level of each factor of the study, e.g. factor.init = "he";
                           NaN for factors of other studies
    seed            int    trial seed (final runs 0..n-1; tune runs use the tuning seed)
    stage           str    "tune" (learning-rate search on the validation split) or
                           "final" (the runs that give test numbers)
    profile         str    "smoke" | "quick" | "full"
    claims          str    comma-separated claim ids the study answers
    tuned_lr        float  final runs of tuned studies: the learning rate tuning chose (tag bench.tuned_lr)
    tune_lr         float  tune runs: the learning rate this tuning trial tried (tag bench.tune_lr)
    git_commit      str    code version that produced the record; torch_version str
    optuna_trial    float  the trial's number in its Optuna study (tuning trials count in this order)
    origin_run_id   str    the run id in the store that measured it (an imported run keeps it; else run_id)

From the trial record (bench/engine; one flat JSON per run)
    status          str    "ok" or "diverged" (NaN/Inf loss ended the run; kept, never dropped)
    diverged_epoch  float  epoch of divergence, NaN when status is "ok"
    train_acc, val_acc, test_acc, train_loss, val_loss, test_loss
                    float  final-epoch values (fractions 0..1; NaN for diverged runs)
    best_val_acc    float  best validation accuracy over epochs
    epochs_run      int    epochs trained (fewer than config.epochs when diverged)
    seconds, train_seconds  float  wall and training-only seconds
    images_per_s    float  training throughput
    packed          float  trials trained together in one process (bench study --pack); NaN or 1 = alone.
                           A packed run's seconds are the pack's wall clock, not its own
    chance          float  accuracy of guessing for the run's task: 0.1 (10 classes), 0.2 (the 5-class transfer
                           target); a diverged run's accuracy counts as this (0.1 where a record lacks it)
    graph           str    how the training step ran, e.g. "eager" (CPU) or a captured CUDA graph
    partial_batch   str    what happened to the last, smaller batch of an epoch (run eagerly or dropped)
    n_params        int    trainable parameters
    n_train_used, n_val_used, n_test_used  int  split sizes
    device          str    e.g. "cpu (x86_64)" or "cuda (NVIDIA H100 ...)"
    data_source     str    e.g. "CIFAR-10 (JPEG q75 copy)"; data_digest str: data fingerprint
    config.<key>    any    the full TrialConfig (config.lr, config.epochs, config.init, ...)
    history.<m>     list   per-epoch values, index = epoch 0..E (epoch 0 = at initialisation),
                           for m in epoch, seconds (cumulative training seconds), lr,
                           train/val/test_acc, train/val/test_loss, probe_loss, eff_lr_median,
                           eff_lr_p10, eff_lr_p90 and per layer A01.act_mean, A01.act_std,
                           A01.saturated, A01.dead (activation layers Axx, in forward order),
                           L01.grad_norm, L01.same_sign (Linear only), L01.eff_lr (weight layers Lxx).
                           Lists measured after training steps only (L01.update_ratio,
                           train_loss_running) have E entries and start at epoch 1.
    init.Axx.hist_edges / init.Axx.hist_counts, final.Axx.hist_edges / final.Axx.hist_counts
                    list   activation histograms (40 bins) at initialisation and after training
    Lxx.distinct_units, Lxx.units  float  distinct / total hidden units (rows) per weight layer
    collapse_err    float  identity nets: max relative error of the composed linear map (else NaN)
    adagrad.bin_sqrt_sum, adagrad.bin_eff_lr  list  AdaGrad runs: parameters in deciles of
                           accumulated squared gradient: mean sqrt(sum g^2) and mean effective step
    Localization runs (config.task = "localize", bench/engine/localize.py) add, finals and history.<m> alike:
    train_iou, val_iou, test_iou  float  mean IoU of predicted vs true boxes on fixed canvases (0..1)
    train_box_loss, val_box_loss, test_box_loss  float  the run's box loss on standardised box targets
                           (train/val/test_loss stay the class head's cross-entropy); history.train_box_loss_running
                           (epochs 1..E) is the training batches' box loss
    best_val_iou    float  best validation IoU over epochs
    test_iou_mean_box  float  IoU of always predicting the training set's mean box (the position-blind baseline)
    box_mean, box_std  list  training boxes' mean and std of (cx, cy, w, h), canvas units
    samples.png     str    base64 PNG: 8 fixed test canvases side by side (the same in every run of a test split)
    samples.true_box, samples.pred_box  list  per canvas [cx, cy, w, h] in canvas units (pred: None if diverged)
    samples.label, samples.pred_label   list  per canvas true and predicted class index (pred: None if diverged)

Missing values are NaN (or None inside lists). Nothing here depends on torch or MLflow:
`load.py` builds the frame from MLflow, `bundle.py` reads it from a results bundle (where `url` is empty: the
runs live in the exporting machine's store); tests read it from a committed JSON fixture.

Extras (not columns: a dict passed beside the frame, `extras[study][name]`)
    A study execution may log measurements that are not trials (bench/study/extras.py) as the artifact
    `<name>.json` of a run tagged bench.kind=extra, bench.extra=<name>, bench.study=<study> (no
    bench.stage). `load.load_extras` keeps the newest FINISHED one per (study, name): the parsed JSON
    plus run_id, url (MLflow UI link) and start_time. Known extras:
    extras["optimizer"]["trajectories"]
        {"steps": int (step budget), "surfaces": {<surface>: {"label": str, "favours": str (which optimizers the
         surface favours by construction, and why), "start": [x, y], "minimum": [x, y], "steep": [dx, dy] (unit
         vector of the steep direction; reversals are counted along it), "grid": {"x": [...], "y": [...],
         "z": [[...]]} (z[i][j] = f(x[j], y[i])), "optimizers": {<optimizer>: {"lr": float, "lr_grid": [lo, hi]
         (the searched grid after widening), "lr_on_edge": bool, "path": [[x, y], ...],
         "loss": [float | None, ...]}}}}}
        every optimizer from the same start, each at its own best lr; a diverged path ends early and its last loss
        is None. Surfaces (bench/study/extras.py): "quadratic" (0.5 (x^2 + 25 y^2), axis-aligned), "rotated" (the
        same turned by 45 degrees), "rosenbrock". Older extras lack favours, steep and lr_grid (read as y and unknown).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.study.bundles import clean_value, is_missing

PROFILE_ORDER = ("full", "quick", "smoke")  # the report uses the most thorough profile measured


def read_runs(path: str | Path) -> pd.DataFrame:
    """Read a runs frame written by `write_runs` (JSON records, optionally gzipped)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return pd.DataFrame(json.load(f))


def read_extras(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read study extras written by `write_extras` ({} when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def write_extras(extras: dict[str, dict[str, Any]], path: str | Path) -> None:
    """Write study extras (see "Extras" above) as JSON; gzipped when the name ends in .gz."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        json.dump(extras, f, separators=(",", ":"), default=clean_value)


def write_runs(df: pd.DataFrame, path: str | Path) -> None:
    """Write the frame as JSON records (NaN -> null); gzipped when the name ends in .gz."""
    path = Path(path)
    rows = [{k: clean_value(v) for k, v in row.items() if not is_missing(v)} for row in df.to_dict("records")]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        json.dump(rows, f, separators=(",", ":"))


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """The runs frame for the analyses: its text columns as Python strings (object dtype) and one block per dtype.
    pandas 3 keeps every text column in a block of its own (its string dtype); with the runs frame's 30-odd text
    columns that made each row selection and row read several times slower, and the analyses make thousands.
    Values and missing values (NaN) are unchanged; a frame without such columns is returned as it is."""
    text = {c: object for c, t in df.dtypes.items() if isinstance(t, pd.StringDtype)}
    return df.astype(text).copy() if text else df


def finals(df: pd.DataFrame, study: str) -> pd.DataFrame:
    """Final runs of `study` at its most thorough measured profile (see `profile_of`)."""
    runs = df[(df["study"] == study) & (df["stage"] == "final")]
    profile = profile_of(runs)
    return runs[runs["profile"] == profile] if profile else runs.iloc[:0]


def tunes(df: pd.DataFrame, study: str, profile: str | None) -> pd.DataFrame:
    """Tune runs of `study` at `profile`."""
    return df[(df["study"] == study) & (df["stage"] == "tune") & (df["profile"] == profile)]


def profile_of(runs: pd.DataFrame) -> str | None:
    """The most thorough profile present among `runs`: full, else quick, else smoke."""
    present = set(runs["profile"]) if len(runs) else set()
    return next((p for p in PROFILE_ORDER if p in present), None)


def layers(df: pd.DataFrame, prefix: str, stat: str) -> list[str]:
    """Layer names (e.g. A01, A02, ...) that have a `history.<layer>.<stat>` column, in order."""
    pat = re.compile(rf"^history\.({prefix}\d+)\.{re.escape(stat)}$")
    names = [m.group(1) for c in df.columns if (m := pat.match(c))]
    return sorted(names, key=lambda n: int(n[1:]))


def series(row: pd.Series, metric: str) -> list[float]:
    """The per-epoch list `history.<metric>` of one run as floats (None -> NaN); [] when absent."""
    value = row.get(f"history.{metric}")
    if not isinstance(value, (list, tuple, np.ndarray)):
        return []
    return [float("nan") if v is None else float(v) for v in value]


def at_epoch(row: pd.Series, metric: str, epoch: int) -> float:
    """history.<metric> at `epoch` (-1 = last measured); lists that start at epoch 1 are aligned."""
    values = series(row, metric)
    if not values:
        return float("nan")
    offset = len(series(row, "epoch")) - len(values)  # 1 for lists measured after steps only
    i = len(values) - 1 if epoch < 0 else epoch - offset
    return values[i] if 0 <= i < len(values) else float("nan")


def long_history(runs: pd.DataFrame, metrics: list[str], by: str = "arm") -> pd.DataFrame:
    """Tidy per-epoch table: columns run_id, seed, `by`, epoch, metric, value (for seaborn)."""
    out = []
    for _, row in runs.iterrows():
        n = len(series(row, "epoch"))
        for metric in metrics:
            values = series(row, metric)
            offset = n - len(values)
            out += [(row["run_id"], row["seed"], row[by], i + offset, metric, v) for i, v in enumerate(values)]
    return pd.DataFrame(out, columns=["run_id", "seed", by, "epoch", "metric", "value"])


def distinct(runs: pd.DataFrame, column: str) -> list[str]:
    """The column's values as sorted distinct strings ([] when the column is absent), e.g. the devices of some runs."""
    return sorted(set(runs[column].dropna().astype(str))) if column in runs else []


def num(runs: pd.DataFrame, column: str) -> pd.Series:
    """A numeric column (NaN where absent or not a number)."""
    if column not in runs:
        return pd.Series(np.nan, index=runs.index)
    return pd.to_numeric(runs[column], errors="coerce")


def row_layers(row: pd.Series, prefix: str, stat: str) -> list[str]:
    """Layer names this run has `history.<layer>.<stat>` for (its own depth), in order."""
    pat = re.compile(rf"^history\.({prefix}\d+)\.{re.escape(stat)}$")
    names = [m.group(1) for c, v in row.items() if (m := pat.match(c)) and isinstance(v, (list, tuple)) and len(v)]
    return sorted(names, key=lambda n: int(n[1:]))
