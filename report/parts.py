"""The test parts every analysis builds its verdict from (report/verdict.py decides them): a Welch comparison,
a paired comparison, an equivalence interval, a one-sample test against a value, a rank correlation, a failure
rate (Fisher) and an exact check; each carries its evidence in words and the runs behind it."""

from __future__ import annotations

import math

import pandas as pd

from .metrics import Metric, failed, mean_of, seeds_per_arm, values
from .section import fmt, run_links
from .stats import Diff, fisher_less, one_sample, spearman_test, welch
from .verdict import Part


def n_seeds(*groups: pd.DataFrame) -> int:
    """The fewest seeds among the groups of runs compared (0 when a group is empty)."""
    return min((g["seed"].nunique() if len(g) else 0) for g in groups) if groups else 0


def _runs(*groups: pd.DataFrame) -> list:
    return run_links(pd.concat(groups)) if groups else []


def tested(
    assertion: str,
    label: str,
    test: str,
    diff: Diff,
    *groups: pd.DataFrame,
    expected: int = 1,
    unit: str = "",
    scale: float = 1.0,
    evidence: str = "",
    margin: float | None = None,
) -> Part:
    """A part from a difference already computed (e.g. stats.interaction) over the runs `groups`."""
    return Part(
        assertion,
        label,
        test,
        diff=diff,
        expected=expected,
        unit=unit,
        scale=scale,
        margin=margin,
        n_min=n_seeds(*groups),
        evidence=evidence,
        runs=_runs(*groups),
    )


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
    evidence = f"{fmt(mean_of(va) * scale)} vs {fmt(mean_of(vb) * scale)}"
    return tested(
        assertion, label, "Welch t-test", welch(va, vb), a, b, expected=expected, unit=unit, scale=scale, evidence=evidence
    )


def equivalent(
    assertion: str,
    label: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: Metric,
    margin: float,
    unit: str = "pts",
    scale: float = 100.0,
    evidence: str = "",
) -> Part:
    """Holds when the Welch 95% interval of metric(a) − metric(b) lies within ±margin (margin in metric units)."""
    va, vb = values(a, metric), values(b, metric)
    suffix = "%" if unit == "pts" else ""
    return tested(
        assertion,
        label,
        f"equivalence: Welch 95% interval within ±{margin * scale:g} {unit}",
        welch(va, vb),
        a,
        b,
        unit=unit,
        scale=scale,
        margin=margin,
        evidence=evidence or f"{fmt(mean_of(va) * scale)}{suffix} vs {fmt(mean_of(vb) * scale)}{suffix}",
    )


def against(
    assertion: str,
    label: str,
    runs: pd.DataFrame,
    metric: Metric,
    value: float,
    expected: int = 1,
    unit: str = "",
    scale: float = 1.0,
    evidence: str = "",
    test: str = "one-sample t-test",
) -> Part:
    """A one-sample t-test of mean metric(runs) − value; the claim expects sign `expected`."""
    v = values(runs, metric)
    return tested(
        assertion,
        label,
        test,
        one_sample(v, value),
        runs,
        expected=expected,
        unit=unit,
        scale=scale,
        evidence=evidence or f"{fmt(mean_of(v) * scale)} vs {fmt(value * scale)}",
    )


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
    return tested(
        assertion,
        label,
        f"paired t-test over {len(diffs)} matched runs",
        one_sample(diffs, 0.0),
        a,
        b,
        expected=expected,
        unit=unit,
        scale=scale,
        evidence=f"mean paired difference {fmt(mean_of(diffs) * scale)}",
    )


def rank(assertion: str, label: str, x: list[float], y: list[float], runs: pd.DataFrame, evidence: str = "") -> Part:
    """Spearman rank correlation of x and y (pairs where both are finite); the claim expects a positive one."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    rho, p = spearman_test([a for a, _ in pairs], [b for _, b in pairs])
    n = len(pairs)
    diff = Diff(float(rho), math.nan, math.nan, float(rho), float(p), n - 2, n, n)
    part = tested(
        assertion, label, "Spearman rank correlation", diff, runs, evidence=evidence or f"ρ = {fmt(float(rho))} over {n} pairs"
    )
    part.n_min = seeds_per_arm(runs)  # every arm's mean needs its seeds
    return part


def failure_part(assertion: str, label: str, a: pd.DataFrame, b: pd.DataFrame) -> Part:
    """Fisher exact test (one-sided) that runs `a` fail (diverge or do not train) less often than runs `b`."""
    bad_a, bad_b = sum(failed(r) for _, r in a.iterrows()), sum(failed(r) for _, r in b.iterrows())
    rate = bad_a / max(len(a), 1) - bad_b / max(len(b), 1)
    p = fisher_less(bad_a, len(a), bad_b, len(b))
    diff = Diff(rate, math.nan, math.nan, math.nan, p, math.nan, len(a), len(b))
    return tested(
        assertion,
        label,
        "Fisher exact test (one-sided)",
        diff,
        a,
        b,
        expected=-1,
        unit="pts",
        scale=100,
        evidence=f"failed {bad_a}/{len(a)} vs {bad_b}/{len(b)}",
    )


def check(assertion: str, label: str, runs: pd.DataFrame, passed: bool | None, evidence: str) -> Part:
    """An exact check over every run in `runs` (no p-value); passed=None: no run could be checked
    (e.g. all diverged), which counts as within noise."""
    n_min = int(runs.groupby("arm")["seed"].nunique().min()) if len(runs) else 0
    return Part(assertion, label, "exact check", check=passed, evidence=evidence, n_min=n_min, runs=run_links(runs))
