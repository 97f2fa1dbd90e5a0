"""The transfer and fc-head analyses (report/claims/transfer.py) on constructed runs frames: no torch, no MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from report.build import write_report
from report.figures import FigureMaker
from report.sections import build_sections
from report.verdict import INCONCLUSIVE, PARTLY, SUPPORTED

SIZES = {"pc50": 50, "pc500": 500, "pc4500": 4500}
SECONDS = {"scratch": 10.0, "linear": 3.0, "mlp": 3.5, "finetune": 10.0}  # per 50 images per class


def accuracy(mode: str, n: int, cross: bool) -> float:
    """Frozen features win on small sets; with `cross`, training everything catches up at 4500/class."""
    if mode == "scratch":
        return {50: 0.35, 500: 0.55, 4500: 0.80 if cross else 0.62}[n]
    if mode == "finetune":
        return {50: 0.62, 500: 0.72, 4500: 0.85}[n]
    return {50: 0.60, 500: 0.68, 4500: 0.72}[n] + (0.0 if mode == "linear" else 0.005)


def runs(seeds: int = 3, cross: bool = True, mlp_gain: float = 0.0, same: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for mode in ("scratch", "linear", "mlp", "finetune"):
        for size, n in SIZES.items():
            for s in range(seeds):
                acc = 0.5 if same else accuracy(mode, n, cross) + (mlp_gain if mode == "mlp" else 0.0)
                acc = float(acc + rng.normal(0, 0.005))
                secs = float(SECONDS[mode] * n / 50 * (1 + rng.normal(0, 0.02)))
                arm = f"{mode}+{size}+cifar5"
                rid = f"{mode}{size}{s}".ljust(32, "0")
                rows.append(
                    {
                        "run_id": rid,
                        "experiment_id": "1",
                        "run_name": f"final {arm} seed={s}",
                        "url": f"http://127.0.0.1:5000/#/experiments/1/runs/{rid}",
                        "start_time": len(rows),
                        "study": "transfer",
                        "arm": arm,
                        "seed": s,
                        "stage": "final",
                        "profile": "quick",
                        "claims": "transfer,fc-head",
                        "status": "ok",
                        "data_source": "constructed",
                        "device": "cpu",
                        "git_commit": "test",
                        "n_params": 1000,
                        "factor.transfer": mode,
                        "factor.size": size,
                        "factor.source": "cifar5",
                        "config.per_class": n,
                        "config.transfer": mode,
                        "config.task": "transfer",
                        "config.epochs": 2,
                        "config.lr": 0.01,
                        "tuned_lr": 0.01,
                        "test_acc": acc,
                        "val_acc": acc,
                        "train_acc": min(acc + 0.1, 1.0),
                        "train_seconds": secs,
                        "images_per_s": 5 * n * 2 / secs,
                        "history.epoch": [0, 1, 2],
                        "history.val_acc": [0.2, acc - 0.05, acc],
                        "history.seconds": [0, secs / 2, secs],
                    }
                )
    return pd.DataFrame(rows)


def sections(df: pd.DataFrame, figs: FigureMaker | None = None) -> dict:
    return {s.claim_id: s for s in build_sections(df, figs or FigureMaker(None), study="transfer")}


def test_both_claims_get_their_own_sections():
    secs = sections(runs())
    assert set(secs) == {"transfer", "fc-head"}
    assert all(s.verdict.label != "not yet measured" for s in secs.values())


def test_transfer_holds_on_small_sets_and_the_crossover_makes_it_partly_supported():
    sec = sections(runs(cross=True))["transfer"]
    outcome = {p.label: p.outcome for p in sec.parts}
    assert outcome["linear − scratch, test accuracy (pc50)"] == "holds"
    assert outcome["linear − scratch, test accuracy (pc4500)"] == "fails"  # scratch wins with 4500/class
    assert outcome["linear − finetune, training seconds (pc4500)"] == "holds"
    assert sec.verdict.label == PARTLY, sec.verdict.reason
    assert not math.isnan(sec.parts[0].p_holm) and sec.parts[0].p_holm >= sec.parts[0].diff.p  # Holm-corrected
    grid = next(t for t in sec.tables if t.title.startswith("Test accuracy (%) by transfer mode"))
    assert grid.columns[1:4] == ["pc50", "pc500", "pc4500"]
    assert [r[0] for r in grid.rows] == ["scratch", "linear", "mlp", "finetune"]
    assert abs(float(grid.rows[1][1].split()[0]) - 60) < 1 and "[" in grid.rows[1][1]  # linear, 50/class: mean [95% CI] in %
    ratio = next(t for t in sec.tables if t.title.startswith("Frozen linear head vs fine-tuning"))
    assert float(ratio.rows[-1][2]) == pytest.approx(10 / 3, rel=0.05)


def test_transfer_without_crossover_is_supported_and_without_effect_inconclusive():
    assert sections(runs(cross=False))["transfer"].verdict.label == SUPPORTED
    none = runs(same=True)
    none["train_seconds"] = 5.0 + np.random.default_rng(1).normal(0, 0.5, len(none))
    sec = sections(none)["transfer"]
    assert sec.verdict.label == INCONCLUSIVE, sec.verdict.reason
    assert sections(runs(seeds=1))["transfer"].verdict.label == INCONCLUSIVE


def test_fc_head_linear_enough_is_supported_and_a_better_mlp_only_partly():
    sec = sections(runs())["fc-head"]
    assert sec.verdict.label == SUPPORTED, sec.verdict.reason
    assert sec.parts[0].test == "one-sample t-test" and len(sec.parts) == 1 + len(SIZES)
    gained = sections(runs(mlp_gain=0.10))["fc-head"]
    assert gained.verdict.label == PARTLY and "agree within ±3 pts" in gained.verdict.reason
    assert sections(runs(seeds=1))["fc-head"].verdict.label == INCONCLUSIVE


def test_diverged_runs_count_as_chance_in_the_grid():
    df = runs()
    m = df["arm"] == "scratch+pc50+cifar5"
    df.loc[m, ["status", "test_acc"]] = ["diverged", math.nan]
    sec = sections(df)["transfer"]
    grid = next(t for t in sec.tables if t.title.startswith("Test accuracy (%) by transfer mode"))
    assert "(3/3 diverged)" in grid.rows[0][1] and grid.rows[0][1].startswith("10 ")


def test_figure_and_report_are_written(tmp_path):
    sec = sections(runs(), FigureMaker(tmp_path))["transfer"]
    assert sec.figures and (tmp_path / sec.figures[0].file).stat().st_size > 10_000
    index, _ = write_report(runs(), tmp_path / "out", study="transfer", source="constructed")
    html = index.read_text()
    assert "transfer-size.png" in html and "fc-head" in html
