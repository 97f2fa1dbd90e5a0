"""Claim views -> one self-contained HTML page (templates/): the summary with each claim's headline verdict and its
verdict per source, then a section per claim with the sources side by side and each source's evidence in a tab."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from importlib import resources
from string import Template

from .section import Cell, Link, Scale, Section, fmt_diff, fmt_p
from .sources import View
from .stats import LEVEL, POWER_ASSUMPTION
from .verdict import FEW, HOLDS, MIN_SEEDS, NOISE, NOT_MEASURED, RULE, needed_text

HOW_TO_READ = [
    f'Every number is a mean over seeds with its {LEVEL:.0%} Student-t interval in brackets; "(n=1)" means a single '
    "seed and no interval.",
    "Each claim is split into parts. A part is decided by Welch's t-test (or the test named beside it) with Holm's "
    "correction over the claim's parts, by an equivalence interval, or by an exact check that must pass in every run.",
    "Verdict rule: " + RULE,
    "A part within noise says how many seeds per arm would settle it: " + POWER_ASSUMPTION + ".",
    "Seeds per arm are fixed by each study file before its runs, from a pilot (the rule: studies/README.md, "
    '"Seeds"; each study\'s description gives the pilot figures); they are never raised until a result is significant.',
    "Scale: the profile (smoke, quick or full), the training images and epochs per run, and the device. A verdict "
    "below the full profile is labelled small scale; a study with runs missing says how much of it exists; runs that "
    "differ from the current study file are labelled, not mixed with others.",
    "Several results sources (shipped reference bundles, your own MLflow runs) are shown side by side, never pooled; "
    f"the summary's headline verdict comes from the largest scale measured with at least {MIN_SEEDS} seeds per arm.",
    "Diverged runs are counted, not dropped: a diverged run's accuracy counts as chance (10%; 20% on the 5-class "
    'transfer target) and it never reaches a target; the "diverged" column shows how many.',
    'Only final runs (stage "final") give test numbers; tuning runs only choose each arm\'s learning rate.',
    "Run ids link to the MLflow UI (start it with `make ui`); runs from a bundle name the run in the store that exported it.",
]


@dataclass
class SourceMeta:
    heading: str  # "reference · quick · CPU"
    origin: str  # bundle file or tracking URI (password hidden)
    n_runs: int
    exported: str = ""
    studies: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    data_sources: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.n_runs} runs from {self.origin}"
            + (f" (exported {self.exported})" if self.exported else "")
            + f"; studies: {', '.join(self.studies) or 'none'}; code {', '.join(self.commits) or '–'}; data: "
            + f"{'; '.join(self.data_sources) or '–'}; devices: {'; '.join(self.devices) or '–'}"
        )


@dataclass
class Meta:
    generated: str  # timestamp
    sources: list[SourceMeta]
    report_run: Link | None = None  # the MLflow run this report is logged to


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _slug(label: str) -> str:
    return label.replace(" ", "-")


class _Raw(str):
    """Pre-rendered HTML inside a table cell (badges, outcome labels)."""


INTERVAL = re.compile(r"^(.+?) (\[[^\]]+\]|\(n=\d+\))$")  # "mean [lo, hi]" or "mean (n=1)"


def _cell(c: Cell) -> str:
    if isinstance(c, _Raw):
        return str(c)
    if isinstance(c, Link):
        if not c.href:
            return f'<span class="rid" title="a run in the MLflow store that exported this bundle">{_e(c.text)}</span>'
        return f'<a href="{_e(c.href)}">{_e(c.text)}</a>'
    if isinstance(c, list):
        return " ".join(_cell(x) for x in c)
    m = INTERVAL.match(c)
    if m and len(c) < 48:  # the interval on its own line, smaller
        return f'{_e(m.group(1))}<br><span class="ci">{_e(m.group(2))}</span>'
    return _e(c)


def table(columns: list[str], rows: list[list[Cell]], table_id: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        tds = []
        for c in row:
            numeric = isinstance(c, str) and not isinstance(c, _Raw) and len(c) < 40 and c[:1] in "+-−–0123456789"
            cls = "runs" if isinstance(c, list) else "num" if numeric else ""
            tds.append(f'<td class="{cls}">{_cell(c)}</td>' if cls else f"<td>{_cell(c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    idattr = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{idattr}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def badge(label: str) -> str:
    return f'<span class="badge {_slug(label)}">{_e(label)}</span>'


def gist(claim: str, limit: int = 90) -> str:
    """The claim's first sentence, cut at `limit` characters."""
    first = re.split(r"(?<!e\.g)\.\s+(?=[A-Z])", claim)[0].rstrip(".")
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + " …"


def effect_text(s: Section) -> str:
    v = s.verdict
    if v.label == NOT_MEASURED:
        return "run: " + (s.commands[0] if s.commands else "")
    return f"{v.effect.label}: {fmt_diff(v.effect)}" if v.effect else "–"


def scale_text(sc: Scale | None) -> str:
    """ "quick · 10,000 training images · 6 epochs · CPU (small scale, incomplete)" """
    if sc is None:
        return "–"
    labels = sc.labels()
    return sc.line() + (f" ({', '.join(labels)})" if labels else "")


def summary_rows(vs: list[View], sources: list[str]) -> list[list[str]]:
    """One row per claim: id, headline verdict, effect [CI], scale, seeds per arm, then (several sources) the
    verdict of each source; shared by HTML and Markdown."""
    rows = []
    for v in vs:
        s = v.headline
        if s.title:
            continue
        measured = s.verdict.label != NOT_MEASURED
        row = [s.claim_id, s.verdict.label, effect_text(s), scale_text(s.scale), str(s.verdict.n_seeds) if measured else "–"]
        if len(sources) > 1:
            by = {e.source: e.verdict.label for e in v.entries if e.verdict.label != NOT_MEASURED}
            row += [by.get(src, "–") for src in sources]
        rows.append(row)
    return rows


def part_row(p, html_outcome: bool = False) -> list:
    """One row of "The test" table for a verdict Part."""
    is_test = p.diff is not None and p.check is None
    stat = "–"
    if is_test and p.diff.stat == p.diff.stat:  # not NaN
        stat = "exact" if abs(p.diff.stat) == float("inf") else f"{p.diff.stat:.3g}"
    outcome, needed = p.outcome, needed_text(p)
    if html_outcome:
        cls = {HOLDS: "holds", NOISE: "noise", FEW: "few"}.get(outcome, "fails")
        more = f'<div class="needed">{_e(needed)}</div>' if needed else ""
        outcome = _Raw(f'<span class="outcome {cls}">{_e(p.outcome)}</span>{more}')
    elif needed:
        outcome = f"{outcome} ({needed})"
    return [
        p.assertion,
        p.label,
        p.test,
        p.evidence or "–",
        fmt_diff(p) if is_test else "–",
        stat,
        fmt_p(p.diff.p) if is_test else "–",
        fmt_p(p.p_holm) if is_test else "–",
        outcome,
        p.runs,
    ]


TEST_COLUMNS = [
    "part of the claim",
    "comparison",
    "test",
    "measured",
    "effect [95% CI]",
    "statistic",
    "p",
    "p (Holm)",
    "outcome",
    "runs",
]


def compare_rows(entries: list[Section]) -> tuple[list[list[Cell]], list[list[Cell]]]:
    """Side by side: (rows of verdict, effect, scale, seeds, definition, literature; rows of each part's outcome),
    one column per source."""
    sc = [e.scale for e in entries]
    rows = [
        ["verdict", *(e.verdict.label for e in entries)],
        ["headline effect", *(effect_text(e) for e in entries)],
        ["scale", *(scale_text(s) for s in sc)],
        ["seeds per arm", *(str(e.verdict.n_seeds) for e in entries)],
        ["how much exists", *("; ".join(s.progress) if s and s.progress else "every planned final run" for s in sc)],
        ["study definition", *("; ".join(s.mismatch) if s and s.mismatch else "as in the study file now" for s in sc)],
    ]
    if any(s and s.literature for s in sc):
        rows.append(["reference arm vs literature", *("; ".join(s.literature) if s else "–" for s in sc)])
    parts: dict[str, list[Cell]] = {}
    for i, e in enumerate(entries):
        for p in e.parts:
            cell = p.outcome + (f": {fmt_diff(p)}" if p.diff is not None and p.check is None else f": {p.evidence}")
            parts.setdefault(p.assertion, ["–"] * len(entries))[i] = cell
    return rows, [[a, *cells] for a, cells in parts.items()]


def _scale_html(sc: Scale | None) -> str:
    """The scale in a summary cell: its line, then its warnings as tags."""
    if sc is None:
        return "–"
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in sc.labels())
    return f"{_e(sc.line())}" + (f'<div class="tags">{tags}</div>' if tags else "")


def _scale_block(s: Section) -> str:
    sc = s.scale
    if sc is None:
        return ""
    items = [("Scale", scale_text(sc))]
    items += [("How much exists", p) for p in sc.progress] or [("How much exists", "every planned final run")]
    items += [("Study definition", m) for m in sc.mismatch]
    items += [("Literature", t) for t in sc.literature]
    links = " · ".join(_cell(link) for link in s.study_links)
    warn = " warn" if sc.small or sc.progress or sc.mismatch else ""
    return (
        f'<dl class="setup scale{warn}">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
        + (f"<dt>MLflow</dt><dd>{links}</dd>" if links else "")
        + "</dl>"
    )


def _panel(s: Section) -> str:
    """One source's evidence for a claim: scale, notes, setup, results, the test, verdict, figures, runs."""
    v = s.verdict
    out = [_scale_block(s)]
    if s.notes:
        out.append("<h3>What the notes got right or wrong</h3>" + "".join(f"<p>{_e(n)}</p>" for n in s.notes))
    out.append(
        '<h3>Setup</h3><dl class="setup">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(val)}</dd>" for k, val in s.setup) + "</dl>"
    )
    out.append("<h3>Results</h3>")
    for t in s.tables:
        out.append(
            f'<div class="table-title">{_e(t.title)}</div>'
            + table(t.columns, t.rows)
            + (f'<p class="note">{_e(t.note)}</p>' if t.note else "")
        )
    out.append("<h3>The test</h3>" + table(TEST_COLUMNS, [part_row(p, html_outcome=True) for p in s.parts]))
    out.append(
        f'<h3>Verdict</h3><div class="verdict">{badge(v.label)}<span>{_e(v.reason)}</span></div>'
        f'<p class="rule">Rule: {_e(v.rule)}</p>'
    )
    if s.figures:
        out.append(
            '<h3>Figures</h3><div class="figs">'
            + "".join(
                f'<figure class="{"wide" if f.width > 760 else "half"}"><img src="{_e(f.file)}" alt="{_e(f.title)}">'
                f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}</figcaption></figure>"
                for f in s.figures
            )
            + "</div>"
        )
    if s.commands:
        out.append(
            f'<p class="note">To measure it more thoroughly: {" · ".join(f"<code>{_e(c)}</code>" for c in s.commands)}</p>'
        )
    out.append(
        f'<details><summary>All {len(s.runs)} runs behind this section</summary><p class="runs">'
        + " ".join(_cell(r) for r in s.runs)
        + "</p></details>"
    )
    return "\n".join(out)


def _section_html(v: View) -> str:
    head = v.headline
    title = head.title or head.claim_id
    out = [
        f'<section class="claim" id="{_e(head.anchor)}">',
        f'<h2>{_e(title)} {badge(head.verdict.label)}<a class="toplink" href="#summary">↑ summary</a></h2>',
        f"<blockquote>{_e(head.claim)}</blockquote>",
        f'<p class="settles"><b>Settled by</b> ({_e(", ".join(head.studies))} study): {_e(head.settles)}</p>',
    ]
    if head.verdict.label == NOT_MEASURED:
        out.append(f"<p>Not yet measured: {_e(head.verdict.reason.split(':')[0])}. The command that would measure it:</p>")
        return "\n".join(out + ["<pre>" + "\n".join(_e(c) for c in head.commands) + "</pre></section>"])
    if len(v.entries) == 1:
        return "\n".join(out + [_panel(head), "</section>"])
    names = [e.source for e in v.entries]
    rows, parts = compare_rows(v.entries)
    out.append('<h3>By source, side by side</h3><p class="note">The headline verdict (summary) is ' + _e(head.source) + ".</p>")
    out.append(table(["", *names], [[r[0], *(_Raw(badge(c)) if i == 0 else c for c in r[1:])] for i, r in enumerate(rows)]))
    out.append('<div class="table-title">Each part of the claim, by source</div>' + table(["part of the claim", *names], parts))
    tabs = ['<div class="tabs">']
    for i, e in enumerate(v.entries):
        checked = " checked" if e is head else ""
        tabs.append(f'<input type="radio" name="tabs-{_e(head.anchor)}" id="tab-{_e(head.anchor)}-{i}"{checked}>')
        tabs.append(f'<label for="tab-{_e(head.anchor)}-{i}">{_e(e.source)} {badge(e.verdict.label)}</label>')
    tabs += [f'<div class="panel">{_panel(e)}</div>' for e in v.entries]
    return "\n".join(out + tabs + ["</div></section>"])


def render_html(vs: list[View], meta: Meta, style: str | None = None) -> str:
    """The whole report as one HTML page (figures referenced as files beside it)."""
    style = style if style is not None else resources.files("report").joinpath("templates/style.css").read_text()
    page = Template(resources.files("report").joinpath("templates/page.html").read_text())
    sources = [m.heading for m in meta.sources]
    rows = []
    for row, v in zip(summary_rows(vs, sources), [v for v in vs if not v.headline.title]):
        s = v.headline
        claim = _Raw(f'<a href="#{_e(s.anchor)}">{_e(s.claim_id)}</a><div class="gist">{_e(gist(s.claim))}</div>')
        cells = [claim, _Raw(badge(row[1])), row[2], _Raw(_scale_html(s.scale)), row[4]]
        cells += [_Raw(badge(c)) if c != "–" else c for c in row[5:]]
        rows.append(cells)
    heads = [v.headline for v in vs if not v.headline.title]
    counts = {k: sum(s.verdict.label == k for s in heads) for k in dict.fromkeys(s.verdict.label for s in heads)}
    own = [v.headline for v in vs if v.headline.title]
    columns = ["claim", "verdict", "effect [95% CI] (headline comparison)", "scale", "seeds/arm"]
    columns += [f"{s}" for s in sources] if len(sources) > 1 else []
    head = [
        '<header class="top"><h1>ablation-bench: textbook deep-learning claims, measured on CIFAR-10</h1>',
        f'<p class="meta"><span>generated {_e(meta.generated)}</span>'
        + (f"<span>this report in MLflow: {_cell(meta.report_run)}</span>" if meta.report_run else "")
        + '<span><a href="report.md">Markdown version</a></span></p>',
        '<ul class="sources">'
        + "".join(f"<li><b>{_e(m.heading)}</b>: {_e(m.line())}</li>" for m in meta.sources)
        + "</ul></header>",
        '<h2>Summary</h2><p class="meta">' + " · ".join(f"{n} {_e(k)}" for k, n in counts.items()) + "</p>",
        table(columns, rows, "summary"),
        (
            '<p class="meta">Your own studies (generic layout): '
            + ", ".join(f'<a href="#{_e(s.anchor)}">{_e(s.studies[0])}</a>' for s in own)
            + "</p>"
            if own
            else ""
        ),
        '<div class="box"><b>How to read this report</b><ul>' + "".join(f"<li>{_e(x)}</li>" for x in HOW_TO_READ) + "</ul></div>",
    ]
    body = "\n".join(head + [_section_html(v) for v in vs])
    return page.substitute(title="ablation-bench report", style=style, body=body)
