"""What a claim's section holds (renderer-neutral): setup, scale, tables, the tests, the verdict,
figures and the runs behind every number; plus number formatting shared by all."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .stats import Interval
from .verdict import Part, Verdict


@dataclass(frozen=True)
class Link:
    text: str
    href: str  # "" = no page to link to (e.g. a run of a results bundle whose MLflow store is elsewhere)


def run_links(runs: pd.DataFrame) -> list[Link]:
    """One link per run (its short id) to its MLflow page."""
    return [Link(short(r["run_id"]), r["url"] if isinstance(r.get("url"), str) else "") for _, r in runs.iterrows()]


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
class Scale:
    """At what scale a verdict was measured, and how much of its study exists (report/scale.py fills it in)."""

    profile: str  # e.g. "quick" ("quick, smoke" when the claim's studies ran at different profiles)
    images: str  # training images per run, e.g. "10,000 training images"
    epochs: str  # e.g. "6 epochs"
    device: str  # short, e.g. "CPU" or "H200"
    small: bool  # a small-scale run (not the full profile): its verdict is labelled so
    progress: list[str] = field(default_factory=list)  # per unfinished study: "3 of 12 final runs; arms missing: ..."
    mismatch: list[str] = field(default_factory=list)  # how the runs differ from the current study file
    literature: list[str] = field(default_factory=list)  # the reference arm here beside the published figure

    def line(self) -> str:
        """ "quick · 10,000 training images · 6 epochs · CPU" """
        return " · ".join(x for x in (self.profile, self.images, self.epochs, self.device) if x)

    def labels(self) -> list[str]:
        """Short warnings: small scale, incomplete, other study definition."""
        out = ["small scale"] if self.small else []
        out += ["incomplete"] if self.progress else []
        return out + (["other study definition"] if self.mismatch else [])


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
    source: str = ""  # the results these numbers come from, e.g. "reference" or "your runs"
    scale: Scale | None = None
    study_links: list[Link] = field(default_factory=list)  # each study's runs table in the MLflow UI
    title: str = ""  # set for a section about a study rather than a claim (a user's own study)

    @property
    def anchor(self) -> str:
        """The HTML id of the section: claim-<id>, or study-<name> for a study's own section."""
        return f"study-{self.studies[0]}" if self.title else f"claim-{self.claim_id}"


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
