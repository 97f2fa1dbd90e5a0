"""The analyses of input-normalization, pca, learning-rate and leaky-vs-elu-noise, and the optimizer
trajectories extra, on constructed runs frames (no torch, no MLflow): a clear effect is supported, no
effect is inconclusive, one seed is inconclusive, diverged runs are counted."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from report.build import write_report
from report.figures import FigureMaker
from report.sections import build_sections
from report.trajectories import notes as trajectory_notes
from report.trajectories import path_stats
from report.trajectories import table as trajectory_table
from report.verdict import CONTRADICTED, INCONCLUSIVE, PARTLY, SUPPORTED

EPOCHS = 4
rng = np.random.default_rng(0)


def trial(
    study: str,
    factors: dict[str, str],
    seed: int,
    acc: float,
    *,
    config: dict | None = None,
    status: str = "ok",
    per_epoch: float = 1.0,
    loss: float = 1.5,
    early: float | None = None,
) -> dict:
    """One final run as the frame holds it (report/frame.py): validation accuracy climbs from chance to `acc`
    (reaching `early` after epoch 1 when given), training loss falls to `loss`, `per_epoch` seconds each epoch."""
    arm = "+".join(factors.values())
    rid = f"{study}{arm}{seed}".replace("+", "").replace(".", "").replace("_", "").ljust(32, "0")[:32]
    ep = list(range(EPOCHS + 1))
    curve = [0.1 + (acc - 0.1) * min(1.0, e / 2) for e in ep]
    if early is not None:
        curve[1] = early
    row = {
        "run_id": rid,
        "experiment_id": "1",
        "run_name": f"final {arm} seed={seed}",
        "url": f"http://127.0.0.1:5000/#/experiments/1/runs/{rid}",
        "start_time": seed,
        "study": study,
        "arm": arm,
        "seed": seed,
        "stage": "final",
        "profile": "quick",
        "claims": "",
        "status": status,
        "data_source": "constructed",
        "device": "cpu",
        "git_commit": "test",
        "n_params": 1000,
        "config.epochs": EPOCHS,
        "history.epoch": ep,
        "history.seconds": [e * per_epoch for e in ep],
        "history.val_acc": curve,
        "history.train_loss": [2.3 - (2.3 - loss) * e / EPOCHS for e in ep],
        "history.lr": [0.1] * len(ep),
        "train_seconds": EPOCHS * per_epoch,
        "epochs_run": EPOCHS,
        **{f"factor.{k}": v for k, v in factors.items()},
        **{f"config.{k}": v for k, v in (config or {}).items()},
    }
    if status == "diverged":
        row.update(
            {
                "diverged_epoch": 1,
                "epochs_run": 1,
                "history.epoch": [0],
                "history.seconds": [0.0],
                "history.val_acc": [0.1],
                "history.train_loss": [2.3],
            }
        )
    else:
        row.update({"test_acc": acc, "val_acc": acc, "train_acc": acc + 0.05, "train_loss": loss})
    return row


def jitter(x: float, sd: float = 0.004) -> float:
    return float(x + rng.normal(0, sd))


def section(rows: list[dict], claim: str, extras: dict | None = None):
    return {s.claim_id: s for s in build_sections(pd.DataFrame(rows), FigureMaker(None), extras=extras)}[claim]


# ------------------------------------------------------------------ input-normalization
LRS = {"lr0.001": 0.001, "lr0.01": 0.01, "lr0.1": 0.1, "lr1": 1.0}


def norm_runs(seeds: int, effect: bool) -> list[dict]:
    rows = []
    for norm in ("raw", "unit", "symmetric", "standardize"):
        for lv, lr in LRS.items():
            for s in range(seeds):
                bad = lr == 1.0 or (effect and norm == "raw")
                acc = 0.45 if lr == 0.01 else 0.35
                rows.append(
                    trial(
                        "normalization",
                        {"normalization": norm, "lr": lv},
                        s,
                        jitter(acc),
                        config={"lr": lr, "normalization": norm},
                        status="diverged" if bad else "ok",
                    )
                )
    return rows


def test_input_normalization_clear_effect_is_supported_and_diverged_runs_are_counted():
    sec = section(norm_runs(3, effect=True), "input-normalization")
    assert sec.verdict.label == SUPPORTED, sec.verdict.reason
    assert len(sec.parts) == 9  # stability, speed, accuracy × three scalings, Holm-corrected together
    stability = {r[0]: r for r in sec.tables[0].rows}
    assert stability["raw"][1] == "12/12" and stability["standardize"][1] == "3/12"
    assert stability["raw"][3] == "none" and stability["unit"][3] == "0.1" and stability["unit"][4] == "0.01"
    assert "(3/3 diverged)" in sec.tables[1].rows[0][1]  # the grid shows raw's diverged runs


def test_input_normalization_without_effect_or_with_one_seed_is_inconclusive():
    none = section(norm_runs(3, effect=False), "input-normalization")
    assert none.verdict.label == INCONCLUSIVE and "noise" in none.verdict.reason
    one = section(norm_runs(1, effect=True), "input-normalization")
    assert one.verdict.label == INCONCLUSIVE and "fewer than 2 seeds" in one.verdict.reason


# ------------------------------------------------------------------ pca
def pca_runs(seeds: int, lose: float = 0.0) -> list[dict]:
    rows = []
    arms = {
        "pca-32": ("pca", 32),
        "pca-256": ("pca", 256),
        "pca-3072": ("pca", 3072),
        "pca_whiten-256": ("pca_whiten", 256),
        "zca": ("zca", 0),
        "standardize": ("standardize", 0),
    }
    for arm, (kind, k) in arms.items():
        for s in range(seeds):
            cost = 0.2 + k / 1000 if kind == "pca" else 1.5  # seconds per epoch
            acc = 0.50 - (lose if k == 32 else 0.0)
            rows.append(
                trial(
                    "pca",
                    {"transform": arm},
                    s,
                    jitter(acc, 0.002),
                    per_epoch=jitter(cost, 0.01),
                    config={"normalization": kind, "pca_k": k, "lr": 0.01},
                )
            )
    return rows


def test_pca_fewer_components_faster_at_equal_accuracy_is_supported():
    sec = section(pca_runs(3), "pca")
    assert sec.verdict.label == SUPPORTED, sec.verdict.reason
    assert "pca-32" in sec.parts[1].assertion  # the fewest components within 2 pts on validation
    table = sec.tables[0]
    assert table.columns[3:5] == ["input features", "parameters"]
    assert {r[0]: r[3] for r in table.rows}["standardize"] == "3,072"
    assert any("pca_whiten-256 − pca-256" in r[0] for r in sec.tables[1].rows)


def test_pca_losing_accuracy_is_only_partly_supported():
    rows = pca_runs(3)
    for r in rows:  # chosen on validation, but 6 points worse on test: faster, not as accurate
        if r["arm"] == "pca-32":
            r["test_acc"] -= 0.06
    sec = section(rows, "pca")
    assert sec.verdict.label == PARTLY and "without losing much accuracy" in sec.verdict.reason
    lost = section(pca_runs(3, lose=0.10), "pca")  # pca-32 too inaccurate on validation: pca-256 is tested
    assert "pca-256" in lost.parts[1].assertion
    assert section(pca_runs(1), "pca").verdict.label == INCONCLUSIVE


# ------------------------------------------------------------------ learning-rate
def lr_runs(seeds: int, effect: bool) -> list[dict]:
    rows = []
    grid = {"lr0.0001": 1e-4, "lr0.01": 1e-2, "lr0.1": 0.1, "lr1": 1.0}
    for lv, lr in grid.items():
        for sched in ("constant", "step", "cosine"):
            for s in range(seeds):
                if lr == 1.0:
                    rows.append(
                        trial(
                            "lr-schedule",
                            {"lr": lv, "schedule": sched},
                            s,
                            0.1,
                            status="diverged",
                            config={"lr": lr, "schedule": sched},
                        )
                    )
                    continue
                acc, loss, early = {1e-4: (0.2, 2.2, 0.12), 1e-2: (0.40, 1.6, 0.25), 0.1: (0.45, 1.2, 0.32)}[lr]
                if effect and sched != "constant" and lr == 0.1:
                    acc, loss = 0.52, 0.8
                rows.append(
                    trial(
                        "lr-schedule",
                        {"lr": lv, "schedule": sched},
                        s,
                        jitter(acc),
                        loss=jitter(loss, 0.02),
                        early=jitter(early),
                        config={"lr": lr, "schedule": sched},
                    )
                )
    return rows


def test_learning_rate_clear_effect_is_supported_with_classic_roles():
    sec = section(lr_runs(3, effect=True), "learning-rate")
    assert sec.verdict.label == SUPPORTED, sec.verdict.reason
    assert "lr 0.1" in sec.parts[0].label and "lr 0.0001" in sec.parts[0].label  # large = largest lr that trains
    grid = {r[0]: r for r in sec.tables[0].rows}
    assert all("(3/3 diverged)" in c for c in grid["lr1"][1:4])


def test_learning_rate_without_decay_benefit_is_partly_supported_and_one_seed_inconclusive():
    sec = section(lr_runs(3, effect=False), "learning-rate")
    assert sec.verdict.label == PARTLY and "settles less precisely" in sec.verdict.reason
    assert section(lr_runs(1, effect=True), "learning-rate").verdict.label == INCONCLUSIVE


# ------------------------------------------------------------------ leaky-vs-elu-noise
NOISE = {"clean": (0.0, 0.0), "test0.5": (0.0, 0.5), "test1.0": (0.0, 1.0), "train0.5": (0.5, 0.5), "train1.0": (1.0, 1.0)}


def noise_runs(seeds: int, elu_drop: float, leaky_drop: float) -> list[dict]:
    rows = []
    for act, drop in (("relu", leaky_drop), ("leaky_relu", leaky_drop), ("elu", elu_drop)):
        for arm, (train, test) in NOISE.items():
            for s in range(seeds):
                acc = 0.50 - drop * test
                rows.append(
                    trial(
                        "activation-noise",
                        {"activation": act, "noise": arm},
                        s,
                        jitter(acc),
                        config={"activation": act, "input_noise": train, "test_noise": test},
                    )
                )
    return rows


@pytest.mark.parametrize(
    "elu_drop, leaky_drop, label", [(0.02, 0.20, SUPPORTED), (0.10, 0.10, INCONCLUSIVE), (0.20, 0.02, CONTRADICTED)]
)
def test_leaky_vs_elu_noise_verdict_follows_the_difference_of_drops(elu_drop, leaky_drop, label):
    sec = section(noise_runs(3, elu_drop, leaky_drop), "leaky-vs-elu-noise")
    assert sec.verdict.label == label, sec.verdict.reason
    assert len(sec.parts) == 4 and "σ = 1" in sec.parts[-1].label
    drops = sec.tables[1]
    assert drops.columns[1:4] == ["relu drop", "leaky_relu drop", "elu drop"]


def test_leaky_vs_elu_noise_one_seed_is_inconclusive_and_diverged_counted():
    rows = noise_runs(1, 0.02, 0.20)
    assert section(rows, "leaky-vs-elu-noise").verdict.label == INCONCLUSIVE
    rows = noise_runs(3, 0.02, 0.20)
    for r in rows:
        if r["arm"] == "elu+test1.0":
            r.update(status="diverged", test_acc=math.nan)
    sec = section(rows, "leaky-vs-elu-noise")
    row = next(r for r in sec.tables[0].rows if r[0] == "elu+test1.0")
    assert row[2] == "3/3" and row[3].startswith("10 ")  # counted at chance, which makes ELU's drop large


# ------------------------------------------------------------------ momentum: the trajectories extra
def synthetic_trajectories() -> dict:
    """Two surfaces; on the quadratic SGD zig-zags in y, momentum does not."""
    f = lambda x, y: 0.5 * (x * x + 25 * y * y)  # noqa: E731
    sgd = [[-9.0 + 0.09 * i, 1.5 * (-0.8) ** i] for i in range(101)]
    mom = [[-9.0 + 0.09 * i, 1.5 * 0.9**i] for i in range(101)]
    grid = np.linspace(-2, 2, 12)
    surf = lambda paths: {
        "label": "ill-conditioned quadratic 0.5*(x^2 + 25 y^2)",
        "start": [-9.0, 1.5],  # noqa: E731
        "minimum": [0.0, 0.0],
        "grid": {"x": list(grid * 5), "y": list(grid), "z": [[f(x, y) for x in grid * 5] for y in grid]},
        "optimizers": {o: {"lr": lr, "path": p, "loss": [f(*q) for q in p]} for o, (lr, p) in paths.items()},
    }
    diverged = {"lr": 1.0, "path": [[-9.0, 1.5], [50.0, 80.0]], "loss": [68.6, None]}
    out = {
        "steps": 100,
        "surfaces": {
            "quadratic": surf({"sgd": (0.07, sgd), "momentum": (0.01, mom)}),
            "rosenbrock": surf({"sgd": (0.001, sgd), "adam": (0.1, mom)}),
        },
        "run_id": "f" * 32,
        "url": "http://127.0.0.1:5000/#/experiments/3/runs/" + "f" * 32,
    }
    out["surfaces"]["rosenbrock"]["optimizers"]["adagrad"] = diverged
    return out


def optimizer_runs() -> list[dict]:
    return [
        trial("optimizer", {"optimizer": o}, s, jitter(0.4), config={"optimizer": o, "lr": 0.01})
        for o in ("sgd", "momentum", "nesterov")
        for s in range(2)
    ]


def test_path_stats_count_reversals_and_divergence():
    traj = synthetic_trajectories()
    q = traj["surfaces"]["quadratic"]["optimizers"]
    assert path_stats(q["sgd"], 100)["reversals"] == 99 and path_stats(q["momentum"], 100)["reversals"] == 0
    bad = path_stats(traj["surfaces"]["rosenbrock"]["optimizers"]["adagrad"], 100)
    assert bad["diverged"] == 1 and bad["final loss"] == pytest.approx(68.6)


def test_reversals_are_counted_along_the_surfaces_steep_axis():
    c = s = math.sqrt(0.5)  # a zig-zag across the 45-degree axis: steps alternate along (-s, c), drift along (c, s)
    path = [[0.1 * i * c - 0.5 * (-1) ** i * s, 0.1 * i * s + 0.5 * (-1) ** i * c] for i in range(21)]
    opt = {"lr": 0.1, "path": path, "loss": [1.0] * 21}
    assert path_stats(opt, 20, [-s, c])["reversals"] == 19  # every step flips across the valley
    assert path_stats(opt, 20, [c, s])["reversals"] == 0  # along the valley it moves one way only


def test_trajectory_table_flags_a_best_lr_on_the_grid_edge_and_says_what_each_surface_favours():
    traj = synthetic_trajectories()
    traj["surfaces"]["quadratic"]["favours"] = "per-coordinate adaptive steps: the axes are the coordinates"
    traj["surfaces"]["quadratic"]["optimizers"]["momentum"].update(lr=1e4, lr_grid=[1e-4, 1e4], lr_on_edge=True)
    table = trajectory_table(traj)
    lrs = {(r[0], r[1]): r[2] for r in table.rows}
    assert lrs[("quadratic", "momentum")] == "1e+04 (edge of the grid 1e-04..1e+04)" and lrs[("quadratic", "sgd")] == "0.07"
    assert "quadratic: per-coordinate adaptive steps" in table.note
    assert "quadratic: sgd (this surface favours per-coordinate adaptive steps)" in trajectory_notes(traj)  # lowest loss


def test_momentum_section_shows_trajectories_without_changing_its_verdict(tmp_path):
    rows, traj = optimizer_runs(), synthetic_trajectories()
    without = section(rows, "momentum")
    assert "bench study optimizer" in " ".join(without.notes)
    withx = section(rows, "momentum", {"optimizer": {"trajectories": traj}})
    assert withx.verdict.label == without.verdict.label and len(withx.parts) == len(without.parts)
    table = withx.tables[-1]
    assert [r[1] for r in table.rows] == ["sgd", "momentum", "sgd", "adam", "adagrad"]
    assert "sgd 99" in withx.notes[-1] and "momentum 0" in withx.notes[-1] and "consistent with damping" in withx.notes[-1]
    assert any(link.href == traj["url"] for link in withx.runs)
    index, _ = write_report(
        pd.DataFrame(rows), tmp_path, study="optimizer", source="constructed", extras={"optimizer": {"trajectories": traj}}
    )
    html = index.read_text()
    src = re.search(r'<img src="(figures/opt-trajectories\.png)"', html)
    assert src and (tmp_path / src.group(1)).stat().st_size > 20_000
