"""Interval arithmetic and tests: t intervals over seeds, Welch's and one-sample t-tests with
their intervals, Holm's correction, Fisher's exact test, rank correlation, time to a target, slopes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # every interval in the report is a 95% interval
ALPHA = 0.05  # family-wise error rate per claim (Holm)


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float  # NaN when n < 2: one seed gives no interval
    hi: float
    n: int


def t_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Mean and Student-t interval over seeds (finite values only)."""
    a = _clean(values)
    n = len(a)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(a.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def band(values: Sequence[float]) -> tuple[float, float]:
    """(lo, hi) of the t interval; seaborn's `errorbar=` callable for interval bands."""
    iv = t_interval(values)
    return (iv.mean, iv.mean) if iv.n < 2 else (iv.lo, iv.hi)


@dataclass(frozen=True)
class Diff:
    diff: float  # mean(a) - mean(b)
    lo: float
    hi: float
    stat: float  # Welch t (inf when neither sample varies and the means differ)
    p: float  # two-sided
    df: float
    n_a: int
    n_b: int


def welch(a: Iterable[float], b: Iterable[float], level: float = LEVEL) -> Diff:
    """Welch's unequal-variance t-test of mean(a) - mean(b), with its t interval.

    Needs 2+ values per side for an interval and a p-value (NaN otherwise). When neither
    side varies across seeds the difference is exact: p = 0 if the means differ, else 1.
    """
    x, y = _clean(a), _clean(b)
    n_a, n_b = len(x), len(y)
    if n_a == 0 or n_b == 0:
        return Diff(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n_a, n_b)
    diff = float(x.mean() - y.mean())
    if n_a < 2 or n_b < 2:
        return Diff(diff, math.nan, math.nan, math.nan, math.nan, math.nan, n_a, n_b)
    va, vb = x.var(ddof=1) / n_a, y.var(ddof=1) / n_b
    se = math.sqrt(va + vb)
    if se == 0:
        exact = diff != 0
        return Diff(diff, diff, diff, math.copysign(math.inf, diff) if exact else 0.0, 0.0 if exact else 1.0, math.inf, n_a, n_b)
    df = (va + vb) ** 2 / ((va**2 / (n_a - 1) if va else 0) + (vb**2 / (n_b - 1) if vb else 0))
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), df))
    half = float(sps.t.ppf(0.5 + level / 2, df) * se)
    return Diff(diff, diff - half, diff + half, float(t), p, float(df), n_a, n_b)


def one_sample(values: Iterable[float], mu: float, level: float = LEVEL) -> Diff:
    """t-test of mean(values) - mu (as a Diff with b = the constant mu)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Diff(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0)
    diff = float(x.mean() - mu)
    if n < 2:
        return Diff(diff, math.nan, math.nan, math.nan, math.nan, math.nan, n, 0)
    se = float(x.std(ddof=1) / math.sqrt(n))
    if se == 0:
        return Diff(diff, diff, diff, math.copysign(math.inf, diff) if diff else 0.0, 0.0 if diff else 1.0, n - 1, n, 0)
    t = diff / se
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * se)
    return Diff(diff, diff - half, diff + half, t, float(2 * sps.t.sf(abs(t), n - 1)), n - 1, n, 0)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def crossing(xs: Sequence[float], ys: Sequence[float], target: float) -> float:
    """First x where the curve ys(xs) reaches `target`, linearly interpolated; NaN if never."""
    for i, y in enumerate(ys):
        if y is None or not math.isfinite(y):
            return math.nan  # diverged before reaching it
        if y >= target:
            if i == 0:
                return float(xs[0])
            y0 = ys[i - 1]
            frac = (target - y0) / (y - y0) if y != y0 else 1.0
            return float(xs[i - 1] + frac * (xs[i] - xs[i - 1]))
    return math.nan


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log10(y) on log10(x) over points where both are positive."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if ok.sum() < 3 or np.ptp(np.log10(a[ok])) == 0:
        return math.nan
    return float(np.polyfit(np.log10(a[ok]), np.log10(b[ok]), 1)[0])


def spearman_test(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(Spearman rank correlation, two-sided p) over pairs where both are finite; NaN if < 3 or constant."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan, math.nan
    r = sps.spearmanr(a[ok], b[ok])
    return float(r.statistic), float(r.pvalue)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return spearman_test(x, y)[0]


def fisher_less(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided Fisher exact p that arm a has a lower failure rate than arm b."""
    if n_a == 0 or n_b == 0:
        return math.nan
    return float(sps.fisher_exact([[bad_a, n_a - bad_a], [bad_b, n_b - bad_b]], alternative="less").pvalue)


def interaction(a1: Iterable[float], a0: Iterable[float], b1: Iterable[float], b0: Iterable[float], level: float = LEVEL) -> Diff:
    """(mean a1 − mean a0) − (mean b1 − mean b0) over four independent samples: does the change from
    condition 0 to condition 1 differ between a and b? Welch–Satterthwaite t interval and two-sided p;
    n_a, n_b = the smaller sample of each side. Needs 2+ values in every sample (NaN otherwise)."""
    xs = [_clean(v) for v in (a1, a0, b1, b0)]
    n = [len(x) for x in xs]
    n_a, n_b = min(n[0], n[1]), min(n[2], n[3])
    if min(n) == 0:
        return Diff(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n_a, n_b)
    diff = float((xs[0].mean() - xs[1].mean()) - (xs[2].mean() - xs[3].mean()))
    if min(n) < 2:
        return Diff(diff, math.nan, math.nan, math.nan, math.nan, math.nan, n_a, n_b)
    v = [x.var(ddof=1) / len(x) for x in xs]
    se = math.sqrt(sum(v))
    if se == 0:
        exact = diff != 0
        return Diff(diff, diff, diff, math.copysign(math.inf, diff) if exact else 0.0, 0.0 if exact else 1.0, math.inf, n_a, n_b)
    df = sum(v) ** 2 / sum(vi**2 / (len(x) - 1) for vi, x in zip(v, xs) if vi)
    t = diff / se
    half = float(sps.t.ppf(0.5 + level / 2, df) * se)
    return Diff(diff, diff - half, diff + half, float(t), float(2 * sps.t.sf(abs(t), df)), float(df), n_a, n_b)


POWER = 0.80  # the power a seed estimate aims for
MAX_SEEDS = 1000  # beyond this the estimate says "more than"
POWER_ASSUMPTION = (
    f"seeds per arm for {POWER:.0%} power in a two-sided t-test (Welch's for two arms, one-sample or paired otherwise) "
    f"at alpha {ALPHA} divided by the number of tests in the claim (Holm's strictest step), assuming the observed "
    "difference is the true one and the pooled SD estimated from the observed interval; for an equivalence part, the "
    "seeds whose expected 95% interval fits inside the margin around the observed difference"
)


def seeds_to_detect(d: Diff, alpha: float = ALPHA, margin: float | None = None, power: float = POWER) -> float:
    """Seeds per arm that would detect d's difference (or, with `margin`, show equivalence) at the spread d
    observed (POWER_ASSUMPTION); MAX_SEEDS + 1 when more would be needed; inf when no number of seeds would (no
    difference, or beyond the margin); NaN when d has no interval (one seed, rank and exact tests)."""
    if not (math.isfinite(d.lo) and math.isfinite(d.df) and d.n_a >= 2):
        return math.nan
    two = d.n_b > 0
    se = (d.hi - d.diff) / float(sps.t.ppf(0.5 + LEVEL / 2, d.df))
    sd = se / math.sqrt(1 / d.n_a + 1 / d.n_b) if two else se * math.sqrt(d.n_a)
    n = np.arange(2, MAX_SEEDS + 1)
    df = 2 * n - 2 if two else n - 1
    width = sd * np.sqrt(2 / n if two else 1 / n)  # standard error of the difference with n seeds per arm
    if margin is not None:
        room = margin - abs(d.diff)
        if room <= 0:
            return math.inf
        ok = sps.t.ppf(0.5 + LEVEL / 2, df) * width < room
    else:
        if d.diff == 0:
            return math.inf
        if sd == 0:
            return 2.0
        crit = sps.t.ppf(1 - alpha / 2, df)
        ncp = abs(d.diff) / width
        ok = sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp) >= power
    return float(n[ok][0]) if ok.any() else float(MAX_SEEDS + 1)
