"""The report's interval arithmetic, tests and verdict rules, on constructed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from report.metrics import CHANCE, final_acc
from report.parts import compare
from report.stats import crossing, fisher_less, holm, interaction, one_sample, spearman_test, t_interval, welch
from report.tables import arm_table
from report.verdict import CONTRADICTED, INCONCLUSIVE, PARTLY, SUPPORTED, Part, decide


def test_t_interval_matches_textbook():
    iv = t_interval([1.0, 2.0, 3.0])
    half = sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.lo == pytest.approx(2 - half) and iv.hi == pytest.approx(2 + half)


def test_t_interval_one_seed_has_no_interval_and_nan_is_ignored():
    iv = t_interval([0.5, float("nan"), None])
    assert iv.n == 1 and iv.mean == 0.5 and math.isnan(iv.lo)


def test_welch_matches_scipy():
    a, b = [0.61, 0.64, 0.60, 0.66], [0.52, 0.55, 0.58]
    d = welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert d.p == pytest.approx(ref.pvalue) and d.stat == pytest.approx(ref.statistic)
    assert d.lo < d.diff < d.hi and d.diff == pytest.approx(np.mean(a) - np.mean(b))


def test_welch_exact_when_no_seed_varies():
    assert welch([1, 1], [256, 256]).p == 0.0
    assert welch([3, 3], [3, 3]).p == 1.0
    assert math.isnan(welch([1], [2, 3]).p)  # one seed: no test


def test_one_sample_fisher_and_rank_correlation():
    d = one_sample([-9.1, -9.3, -8.9], -1.0)
    assert d.diff == pytest.approx(-8.1) and d.p < 0.01
    assert fisher_less(0, 8, 8, 8) < 0.001 and fisher_less(4, 8, 4, 8) > 0.5
    rho, p = spearman_test([1, 2, 3, 4, 5, 6], [2, 4, 5, 7, 9, 12])
    assert rho == 1.0 and p < 0.01
    assert math.isnan(spearman_test([1, 2, 3], [5, 5, 5])[0])  # constant: undefined, not an error


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.02, float("nan")])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1])  # NaN is not counted as a test


def test_crossing_interpolates_and_stops_at_divergence():
    assert crossing([0, 1, 2], [0.1, 0.3, 0.5], 0.4) == pytest.approx(1.5)
    assert math.isnan(crossing([0, 1, 2], [0.1, 0.2, 0.3], 0.4))
    assert math.isnan(crossing([0, 1, 2], [0.1, float("nan"), 0.9], 0.4))


# ------------------------------------------------------------------ verdict rules on constructed runs
def runs(arm: str, accs: list[float], status: list[str] | None = None) -> pd.DataFrame:
    status = status or ["ok"] * len(accs)
    return pd.DataFrame(
        {
            "arm": arm,
            "seed": range(len(accs)),
            "run_id": [f"{arm}{i:08d}" for i in range(len(accs))],
            "url": "http://127.0.0.1:5000/#/experiments/1/runs/x",
            "status": status,
            "start_time": range(len(accs)),
            "test_acc": [None if s == "diverged" else a for a, s in zip(accs, status)],
        }
    )


def part(a: pd.DataFrame, b: pd.DataFrame, expected: int = 1) -> Part:
    return compare("a beats b", "a − b, test accuracy", a, b, final_acc("test"), expected=expected, unit="pts", scale=100)


def test_clear_effect_is_supported():
    verdict, parts = decide([part(runs("a", [0.60, 0.61, 0.62]), runs("b", [0.40, 0.41, 0.42]))])
    assert verdict.label == SUPPORTED and parts[0].p_holm < 0.05


def test_no_effect_is_inconclusive():
    verdict, _ = decide([part(runs("a", [0.50, 0.53, 0.49]), runs("b", [0.51, 0.50, 0.52]))])
    assert verdict.label == INCONCLUSIVE and "noise" in verdict.reason


def test_too_few_seeds_is_inconclusive_even_with_a_large_difference():
    verdict, _ = decide([part(runs("a", [0.9]), runs("b", [0.1]))])
    assert verdict.label == INCONCLUSIVE and "fewer than 2 seeds" in verdict.reason


def test_opposite_effect_is_contradicted_and_mixed_is_partly_supported():
    a, b = runs("a", [0.60, 0.61, 0.62]), runs("b", [0.40, 0.41, 0.42])
    assert decide([part(a, b, expected=-1)])[0].label == CONTRADICTED
    assert decide([part(a, b), part(a, b, expected=-1)])[0].label == PARTLY


def test_holm_correction_can_remove_a_marginal_part():
    a, b = runs("a", [0.60, 0.62, 0.64, 0.61]), runs("b", [0.57, 0.60, 0.59, 0.58])
    single = decide([part(a, b)])[1][0]
    assert single.diff.p < 0.05
    four = decide([part(a, b)] * 4)[1][0]
    assert four.p_holm == pytest.approx(min(1.0, 4 * single.diff.p))


def test_diverged_runs_are_counted_as_chance_not_dropped():
    arm = runs("a", [0.6, 0.6, 0.6], status=["ok", "ok", "diverged"])
    table = arm_table("t", arm, [("test acc", final_acc("test"), 1)])
    row = table.rows[0]
    assert row[1] == "3" and row[2] == "1/3"
    assert row[3].startswith(f"{(0.6 + 0.6 + CHANCE) / 3:.3g}")
    # a diverging arm loses to a stable one although its surviving runs are as good
    verdict, _ = decide([part(runs("s", [0.6, 0.61, 0.6]), runs("d", [0.6, 0.6, 0.6], ["diverged"] * 3))])
    assert verdict.label == SUPPORTED


def test_equivalence_part():
    same = Part("a matches b", "a − b", "equivalence", diff=welch([0.50, 0.51, 0.50], [0.50, 0.50, 0.51]), margin=0.02, n_min=3)
    far = Part("a matches b", "a − b", "equivalence", diff=welch([0.70, 0.71, 0.70], [0.50, 0.50, 0.51]), margin=0.02, n_min=3)
    assert decide([same])[0].label == SUPPORTED
    assert decide([far])[0].label == CONTRADICTED


def test_interaction_is_a_difference_of_differences_with_a_welch_interval():
    a1, a0, b1, b0 = [0.50, 0.52, 0.51], [0.48, 0.47, 0.49], [0.50, 0.51, 0.52], [0.30, 0.32, 0.31]
    d = interaction(a1, a0, b1, b0)
    assert d.diff == pytest.approx((np.mean(a1) - np.mean(a0)) - (np.mean(b1) - np.mean(b0)))
    se = math.sqrt(sum(np.var(x, ddof=1) / 3 for x in (a1, a0, b1, b0)))
    assert d.stat == pytest.approx(d.diff / se) and d.lo < d.diff < d.hi and d.p < 0.001
    assert interaction([1, 1], [0, 0], [1, 1], [0, 0]).p == 1.0  # nothing varies, no difference: exact
    assert math.isnan(interaction([1], [0, 0], [1, 1], [0, 0]).p)  # one seed: no test
