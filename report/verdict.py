"""Verdict rules: a claim is split into parts, each decided by a test (Holm-corrected
across the claim's parts), an equivalence interval or an exact check; the parts' outcomes give the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .stats import ALPHA, MAX_SEEDS, Diff, holm, seeds_to_detect

SUPPORTED, PARTLY, CONTRADICTED, INCONCLUSIVE = "supported", "partly supported", "contradicted", "inconclusive"
NOT_MEASURED = "not yet measured"
MIN_SEEDS = 2  # fewer seeds per arm than this: no interval, no test, inconclusive

RULE = (
    f"A part holds when its test is significant in the claimed direction after Holm's correction over "
    f"the claim's parts (p < {ALPHA}), or (equivalence parts) the difference's 95% interval lies within the stated "
    f"margin, or its exact check passes in every run. Supported: every part holds. "
    f"Partly supported: some parts hold. Contradicted: no part holds and one is significant the other way. "
    f"Inconclusive: all parts within noise, or fewer than {MIN_SEEDS} seeds per arm."
)

HOLDS, FAILS, NOISE, FEW = "holds", "fails", "within noise", "too few seeds"


@dataclass
class Part:
    """One testable part of a claim: `a - b` of `metric`, where the claim expects the sign `expected`."""

    assertion: str  # what this part says, in words: "He trains deep ReLU nets to higher test accuracy"
    label: str  # the comparison: "he − xavier, test accuracy (relu, d30)"
    test: str  # "Welch t-test", "one-sample t-test", "Fisher exact test", "exact check"
    diff: Diff | None = None  # for tests; None for exact checks
    expected: int = 1  # +1: a - b > 0 supports the claim; -1: a - b < 0 does
    check: bool | None = None  # for exact checks: passed in every run
    evidence: str = ""  # what was measured, in words (always shown)
    unit: str = ""  # unit of diff, e.g. "pts" (accuracy points x100 shown), "x", "epochs"
    scale: float = 1.0  # diff is shown multiplied by this (100 for accuracy -> points)
    margin: float | None = None  # equivalence part: holds when the whole interval of diff lies within ±margin
    n_min: int = 0  # fewest seeds in any arm compared
    p_holm: float = math.nan
    runs: list = field(default_factory=list)  # Links to the runs behind it
    seeds_needed: float = math.nan  # within noise: seeds per arm that would settle it (stats.POWER_ASSUMPTION)

    @property
    def outcome(self) -> str:
        if self.n_min < MIN_SEEDS:
            return FEW
        if self.check is not None:
            return HOLDS if self.check else FAILS
        if self.margin is not None and self.diff is not None:
            d = self.diff
            if -self.margin < d.lo and d.hi < self.margin:
                return HOLDS
            return FAILS if self.p_holm < ALPHA and abs(d.diff) > self.margin else NOISE
        if self.diff is None or not math.isfinite(self.p_holm) or self.p_holm >= ALPHA:
            return NOISE
        return HOLDS if math.copysign(1, self.diff.diff) == self.expected else FAILS


@dataclass
class Verdict:
    label: str  # SUPPORTED, PARTLY, CONTRADICTED, INCONCLUSIVE or NOT_MEASURED
    reason: str  # which rule fired, in words
    rule: str = RULE
    effect: Part | None = None  # the headline comparison shown in the summary
    n_seeds: int = 0  # fewest seeds per arm among the runs the verdict rests on


def correct(parts: list[Part]) -> list[Part]:
    """Parts with Holm-adjusted p-values over the tests among them; a part left within noise gets the seeds per
    arm that would settle it (at alpha / the number of tests: Holm's strictest step)."""
    ps = [p.diff.p if p.diff is not None and p.check is None else math.nan for p in parts]
    out = [replace(part, p_holm=adj) for part, adj in zip(parts, holm(ps))]
    m = max(sum(math.isfinite(p) for p in ps), 1)
    return [
        replace(p, seeds_needed=seeds_to_detect(p.diff, ALPHA / m, p.margin)) if p.outcome == NOISE and p.diff is not None else p
        for p in out
    ]


def needed_text(part: Part) -> str:
    """ "about 12 seeds per arm would settle it" for a part within noise ("" when no estimate applies)."""
    n = part.seeds_needed
    if math.isnan(n):
        return ""
    if math.isinf(n):
        return "no number of seeds would: the observed difference " + (
            "lies outside the margin" if part.margin is not None else "is zero"
        )
    if n > MAX_SEEDS:
        return f"more than {MAX_SEEDS} seeds per arm would be needed"
    return f"about {int(n)} seeds per arm would settle it"


def decide(parts: list[Part], n_seeds: int | None = None) -> tuple[Verdict, list[Part]]:
    """Apply Holm's correction, then the verdict rule (RULE) to the parts."""
    parts = correct(parts)
    n = min([p.n_min for p in parts] + ([n_seeds] if n_seeds is not None else [])) if parts else (n_seeds or 0)
    head = parts[0] if parts else None
    outcomes = [p.outcome for p in parts]
    if not parts:
        return Verdict(INCONCLUSIVE, "nothing to compare among the runs found", effect=None, n_seeds=n), parts
    if n < MIN_SEEDS or FEW in outcomes:
        return Verdict(
            INCONCLUSIVE, f"fewer than {MIN_SEEDS} seeds per arm ({n}): no interval, no test", effect=head, n_seeds=n
        ), parts
    held = [p for p in parts if p.outcome == HOLDS]
    failed = [p for p in parts if p.outcome == FAILS]
    if len(held) == len(parts):
        label, why = SUPPORTED, f"all {len(parts)} part(s) hold"
    elif held:
        label, why = (
            PARTLY,
            f"{len(held)} of {len(parts)} parts hold; not: "
            + "; ".join(f"{p.assertion} ({p.outcome})" for p in parts if p.outcome != HOLDS),
        )
    elif failed:
        label, why = CONTRADICTED, "no part holds; significant the other way: " + "; ".join(p.assertion for p in failed)
    else:
        needs = [p.seeds_needed for p in parts if math.isfinite(p.seeds_needed)]
        label, why = (
            INCONCLUSIVE,
            "every part is within noise (no Holm-corrected p < 0.05)"
            + (f"; the closest part needs about {int(min(needs))} seeds per arm at the observed spread" if needs else ""),
        )
    return Verdict(label, why, effect=head, n_seeds=n), parts
