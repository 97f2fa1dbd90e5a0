"""The report's verdicts as data: one row per (claim, source) with the values the summary table shows (verdict,
headline effect and its interval, scale, seeds per arm), written beside index.html as verdicts.json and verdicts.csv."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .render import effect_text, scale_text
from .section import Section
from .sources import View
from .verdict import NOT_MEASURED

COLUMNS = [
    "claim",
    "claim_text",
    "source",
    "headline",
    "verdict",
    "effect",
    "comparison",
    "effect_value",
    "ci_low",
    "ci_high",
    "unit",
    "scale",
    "profile",
    "seeds_per_arm",
]
FILES = ("verdicts.json", "verdicts.csv")


def _number(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _effect(s: Section) -> dict[str, Any]:
    """The headline comparison in numbers, as shown (accuracy in points, ...): value, 95% interval, unit; None where
    the summary shows none (an exact check shows its evidence instead)."""
    p = s.verdict.effect if s.verdict.label != NOT_MEASURED else None
    if p is None or p.check is not None or p.diff is None:
        return {
            "comparison": p.label if p is not None else None,
            "effect_value": None,
            "ci_low": None,
            "ci_high": None,
            "unit": None,
        }
    d = p.diff
    return {
        "comparison": p.label,
        "effect_value": _number(d.diff * p.scale),
        "ci_low": _number(d.lo * p.scale),
        "ci_high": _number(d.hi * p.scale),
        "unit": p.unit or None,
    }


def row(s: Section, headline: bool) -> dict[str, Any]:
    """One (claim, source) row; `effect` and `scale` are the summary table's text, `effect_value`/`ci_*` its numbers."""
    measured = s.verdict.label != NOT_MEASURED
    return {
        "claim": s.claim_id,
        "claim_text": s.claim,
        "source": s.source,
        "headline": headline,
        "verdict": s.verdict.label,
        "effect": effect_text(s),
        **_effect(s),
        "scale": scale_text(s.scale),
        "profile": s.scale.profile if s.scale is not None else None,
        "seeds_per_arm": s.verdict.n_seeds if measured else None,
    }


def verdict_rows(vs: list[View]) -> list[dict[str, Any]]:
    """Every claim of the summary table (a user's own study is not a claim: left out), each source that measured it
    in source order, the headline source marked; a claim no source measured keeps its one "not yet measured" row."""
    return [row(e, e is v.headline) for v in vs if not v.headline.title for e in v.entries]


def verdicts_frame(vs: list[View]) -> pd.DataFrame:
    return pd.DataFrame(verdict_rows(vs), columns=COLUMNS)


def write_verdicts(vs: list[View], out: Path) -> tuple[Path, Path]:
    """verdicts.json (a list of rows, null for what is not there) and verdicts.csv (the same rows) in `out`."""
    rows = verdict_rows(vs)
    json_path, csv_path = (Path(out) / name for name in FILES)
    json_path.write_text(json.dumps(rows, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv_path, index=False)
    return json_path, csv_path
