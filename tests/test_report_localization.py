"""The localization analysis (report/claims/localization.py) on constructed runs frames (no torch, no MLflow):
a head that localizes is supported, one that does not is not, one seed is inconclusive, diverged runs are
counted, and the figure of predicted vs true boxes is drawn from the record's samples."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from report.build import write_report
from report.claims.localization import _pair_iou, role
from report.figures import FigureMaker
from report.sections import build_sections
from report.verdict import CONTRADICTED, HOLDS, INCONCLUSIVE, PARTLY, SUPPORTED

EPOCHS = 3
ARMS = {"l2": ("l2", 1.0), "smooth_l1": ("smooth_l1", 1.0), "class_only": ("l2", 0.0)}
BASELINE = 0.35
rng = np.random.default_rng(0)


def strip() -> str:
    """8 grey 64x64 canvases, each with a white square at a known box, as the record's base64 PNG."""
    img = np.full((64, 8 * 64, 3), 128, np.uint8)
    for j in range(8):
        img[16:48, j * 64 + 8 : j * 64 + 40] = 255  # box (cx, cy, w, h) = (0.375, 0.5, 0.5, 0.5)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


PNG = strip()
TRUE = [[0.375, 0.5, 0.5, 0.5]] * 8


def trial(arm: str, seed: int, iou: float, acc: float, status: str = "ok") -> dict:
    loss, weight = ARMS[arm]
    rid = f"loc{arm}{seed}".replace("_", "").ljust(32, "0")[:32]
    ep = list(range(EPOCHS + 1))
    row = {
        "run_id": rid,
        "experiment_id": "1",
        "run_name": f"final {arm} seed={seed}",
        "url": f"http://127.0.0.1:5000/#/experiments/1/runs/{rid}",
        "start_time": seed,
        "study": "localization",
        "arm": arm,
        "factor.head": arm,
        "seed": seed,
        "stage": "final",
        "profile": "quick",
        "claims": "localization",
        "status": status,
        "data_source": "constructed",
        "device": "cpu",
        "git_commit": "test",
        "n_params": 1000,
        "config.epochs": EPOCHS,
        "config.task": "localize",
        "config.box_loss": loss,
        "config.box_weight": weight,
        "config.lr": 0.05,
        "test_iou_mean_box": BASELINE,
        "history.epoch": ep,
        "history.test_iou": [0.3 + (iou - 0.3) * e / EPOCHS for e in ep],
        "history.test_acc": [0.1 + (acc - 0.1) * e / EPOCHS for e in ep],
        "epochs_run": EPOCHS,
        "samples.png": PNG,
        "samples.true_box": TRUE,
        "samples.label": list(range(8)),
        "samples.pred_box": [[0.375 + 0.05, 0.5, 0.5, 0.5]] * 8,
        "samples.pred_label": [0, 1, 2, 3, 4, 5, 6, 0],
    }
    if status == "diverged":
        row.update(
            {
                "diverged_epoch": 1,
                "epochs_run": 1,
                "history.epoch": [0],
                "history.test_iou": [0.3],
                "history.test_acc": [0.1],
                "samples.pred_box": None,
                "samples.pred_label": None,
            }
        )
    else:
        row.update({"test_iou": iou, "val_iou": iou, "test_acc": acc, "val_acc": acc, "train_acc": acc + 0.05, "test_loss": 1.5})
    return row


def frame(seeds: int, iou: dict[str, float], acc: dict[str, float], sd: float = 0.005) -> pd.DataFrame:
    return pd.DataFrame([trial(a, s, iou[a] + rng.normal(0, sd), acc[a] + rng.normal(0, sd)) for a in ARMS for s in range(seeds)])


def section(df: pd.DataFrame, out=None):
    return {s.claim_id: s for s in build_sections(df, FigureMaker(out))}["localization"]


GOOD_IOU = {"l2": 0.65, "smooth_l1": 0.66, "class_only": 0.05}
SAME_ACC = {"l2": 0.50, "smooth_l1": 0.50, "class_only": 0.505}


def test_a_head_that_localizes_at_no_cost_is_supported():
    sec = section(frame(3, GOOD_IOU, SAME_ACC))
    assert sec.verdict.label == SUPPORTED, (sec.verdict.reason, [(p.assertion, p.outcome) for p in sec.parts])
    assert len(sec.parts) == 3 and all(p.outcome == HOLDS for p in sec.parts)
    assert sec.parts[0].diff.diff == pytest.approx(0.65 - BASELINE, abs=0.02)
    rows = {r[0]: r for r in sec.tables[0].rows}
    cols = sec.tables[0].columns
    assert list(rows) == ["l2", "smooth_l1", "class_only"]
    assert rows["l2"][cols.index("mean-box IoU")] == "0.35" and rows["l2"][cols.index("test IoU")].startswith("0.65")
    assert rows["class_only"][cols.index("test acc %")].startswith("50")


def test_a_head_no_better_than_the_mean_box_is_not_supported():
    sec = section(frame(3, {"l2": BASELINE, "smooth_l1": BASELINE, "class_only": 0.05}, SAME_ACC, sd=0.02))
    assert sec.verdict.label in (PARTLY, INCONCLUSIVE, CONTRADICTED)
    assert sec.parts[0].outcome != HOLDS


def test_losing_class_accuracy_or_unequal_losses_fail_their_parts():
    sec = section(
        frame(3, {"l2": 0.55, "smooth_l1": 0.68, "class_only": 0.05}, {"l2": 0.40, "smooth_l1": 0.40, "class_only": 0.50})
    )
    outcomes = [p.outcome for p in sec.parts]
    assert outcomes[0] == HOLDS and outcomes[1] != HOLDS and outcomes[2] != HOLDS
    assert sec.verdict.label == PARTLY


def test_one_seed_is_inconclusive():
    sec = section(frame(1, GOOD_IOU, SAME_ACC))
    assert sec.verdict.label == INCONCLUSIVE and "seeds" in sec.verdict.reason


def test_diverged_runs_count_as_chance_and_zero_iou():
    df = frame(3, GOOD_IOU, SAME_ACC)
    df = pd.concat([df, pd.DataFrame([trial("l2", 3, 0, 0, status="diverged")])], ignore_index=True)
    sec = section(df)
    rows = {r[0]: r for r in sec.tables[0].rows}
    assert rows["l2"][1] == "4" and rows["l2"][2] == "1/4"
    assert sec.parts[0].diff.n_a == 4  # counted, not dropped


def test_roles_come_from_the_config_and_iou_is_computed_without_torch():
    assert role(pd.Series({"config.box_weight": 0.0, "config.box_loss": "smooth_l1"})) == "class_only"
    assert role(pd.Series({"config.box_weight": 2.0, "config.box_loss": "smooth_l1"})) == "smooth_l1"
    assert _pair_iou([0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]) == pytest.approx(1 / 3)
    assert _pair_iou([0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]) == 0.0


def test_the_report_draws_predicted_and_true_boxes(tmp_path):
    df = frame(2, GOOD_IOU, SAME_ACC)
    sec = section(df, tmp_path)
    files = {f.file for f in sec.figures}
    assert {"figures/localization-boxes.png", "figures/localization-curves.png"} <= files
    fig = np.asarray(Image.open(tmp_path / "figures" / "localization-boxes.png").convert("RGB")).astype(int)
    green = (np.abs(fig - [0x00, 0xC8, 0x53]).sum(-1) < 60).sum()
    orange = (np.abs(fig - [0xFF, 0x6D, 0x00]).sum(-1) < 60).sum()
    assert green > 100 and orange > 100  # both kinds of box are drawn
    index, sections = write_report(df, tmp_path / "site", source="constructed")
    html = index.read_text()
    assert 'id="claim-localization"' in html and "localization-boxes.png" in html
