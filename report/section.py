"""What a claim's section holds (renderer-neutral): setup, tables, the tests, the verdict,
figures and the runs behind every number; plus number formatting shared by all."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .stats import Interval
from .verdict import Part, Verdict


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Cell = str | Link | list  # a list cell holds Links (e.g. the runs of an arm)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass
class Figure:
    file: str  # path relative to the report folder, e.g. figures/init-layer-std.png
    title: str
    caption: str = ""
    width: int = 0  # pixels: wide figures take the page's full width, narrow ones sit two abreast


@dataclass
class Section:
    claim_id: str
    claim: str  # the claim in plain words (from CLAIMS)
    studies: list[str]
    settles: str  # what settles it (from CLAIMS)
    verdict: Verdict
    notes: list[str] = field(default_factory=list)  # what the notes got right or wrong, with the measurement
    setup: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)  # the tests, Holm-corrected
    figures: list[Figure] = field(default_factory=list)
    runs: list[Link] = field(default_factory=list)  # every run behind the numbers
    commands: list[str] = field(default_factory=list)  # what would measure it (or measure it better)
    profile: str = ""
    device: str = ""


def fmt(x: float, digits: int = 3) -> str:
    """A number for a table: NaN -> "–", large/small magnitudes in scientific notation."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 10 ** -(digits - 1)):
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}" if abs(x) >= 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".") or "0"


def fmt_iv(iv: Interval, scale: float = 1.0, digits: int = 3) -> str:
    """ "mean [lo, hi]" (or "mean (n=1)" without an interval)."""
    if iv.n == 0:
        return "–"
    m = fmt(iv.mean * scale, digits)
    if iv.n < 2 or math.isnan(iv.lo):
        return f"{m} (n={iv.n})"
    return f"{m} [{fmt(iv.lo * scale, digits)}, {fmt(iv.hi * scale, digits)}]"


def fmt_diff(part: Part | None) -> str:
    """The effect of a part: "+12.3 pts [4.1, 20.5]" or the exact check's evidence."""
    if part is None:
        return "–"
    if part.check is not None:
        return part.evidence
    d = part.diff
    if d is None or math.isnan(d.diff):
        return "–"
    unit = f" {part.unit}" if part.unit else ""
    s = part.scale
    sign = "+" if d.diff * s > 0 else ""
    if math.isnan(d.lo):
        few = d.n_a < 2 or 0 < d.n_b < 2
        return f"{sign}{fmt(d.diff * s)}{unit}" + (" (no interval: n<2)" if few else "")
    return f"{sign}{fmt(d.diff * s)}{unit} [{fmt(d.lo * s)}, {fmt(d.hi * s)}]"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def short(run_id: str) -> str:
    return run_id[:8]
