"""Sections -> one self-contained HTML page (templates/) and the same content as Markdown."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from importlib import resources
from string import Template

from .section import Cell, Link, Section, fmt_diff, fmt_p
from .stats import LEVEL
from .verdict import FEW, HOLDS, NOISE, NOT_MEASURED, RULE

HOW_TO_READ = [
    f'Every number is a mean over seeds with its {LEVEL:.0%} Student-t interval in brackets; "(n=1)" means a single '
    "seed and no interval.",
    "Each claim is split into parts. A part is decided by Welch's t-test (or the test named beside it) with Holm's "
    "correction over the claim's parts, by an equivalence interval, or by an exact check that must pass in every run.",
    "Verdict rule: " + RULE,
    "Diverged runs are counted, not dropped: a diverged run's accuracy counts as chance (10%) and it never reaches a "
    'target; the "diverged" column shows how many.',
    'Only final runs (stage "final") give test numbers; tuning runs only choose each arm\'s learning rate.',
    "Run ids link to the MLflow UI (start it with `bench ui`).",
]


@dataclass
class Meta:
    generated: str  # timestamp
    source: str  # tracking URI (password redacted)
    n_runs: int
    studies: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    data_sources: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    report_run: Link | None = None  # the MLflow run this report is logged to


def _slug(label: str) -> str:
    return label.replace(" ", "-")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------------------- HTML
class _Raw(str):
    """Pre-rendered HTML inside a table cell (badges, outcome labels)."""


INTERVAL = re.compile(r"^(.+?) (\[[^\]]+\]|\(n=\d+\))$")  # "mean [lo, hi]" or "mean (n=1)"


def _cell(c: Cell) -> str:
    if isinstance(c, _Raw):
        return str(c)
    if isinstance(c, Link):
        return f'<a href="{_e(c.href)}">{_e(c.text)}</a>'
    if isinstance(c, list):
        return " ".join(_cell(x) for x in c)
    m = INTERVAL.match(c)
    if m and len(c) < 48:  # the interval on its own line, smaller
        return f'{_e(m.group(1))}<br><span class="ci">{_e(m.group(2))}</span>'
    return _e(c)


def _table(columns: list[str], rows: list[list[Cell]], table_id: str = "") -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        tds = []
        for c in row:
            numeric = isinstance(c, str) and len(c) < 40 and c[:1] in "+-−–0123456789"
            cls = "runs" if isinstance(c, list) else "num" if numeric else ""
            tds.append(f'<td class="{cls}">{_cell(c)}</td>' if cls else f"<td>{_cell(c)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    idattr = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{idattr}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def badge(label: str) -> str:
    return f'<span class="badge {_slug(label)}">{_e(label)}</span>'


def summary_rows(sections: list[Section]) -> list[list]:
    """One row per claim: id, verdict, effect [CI], seeds per arm, profile, device (shared by HTML and Markdown)."""
    rows = []
    for s in sections:
        v = s.verdict
        measured = v.label != NOT_MEASURED
        effect = (
            f"{v.effect.label}: {fmt_diff(v.effect)}"
            if measured and v.effect
            else "–"
            if measured
            else "run: " + (s.commands[0] if s.commands else "")
        )
        rows.append([s.claim_id, v.label, effect, str(v.n_seeds) if measured else "–", s.profile or "–", s.device or "–"])
    return rows


def gist(claim: str, limit: int = 90) -> str:
    """The claim's first sentence, cut at `limit` characters."""
    first = re.split(r"(?<!e\.g)\.\s+(?=[A-Z])", claim)[0].rstrip(".")
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + " …"


def _section_html(s: Section) -> str:
    v = s.verdict
    out = [
        f'<section class="claim" id="claim-{_e(s.claim_id)}">',
        f'<h2>{_e(s.claim_id)} {badge(v.label)}<a class="toplink" href="#summary">↑ summary</a></h2>',
        f"<blockquote>{_e(s.claim)}</blockquote>",
        f'<p class="settles"><b>Settled by</b> ({_e(", ".join(s.studies))} study): {_e(s.settles)}</p>',
    ]
    if v.label == NOT_MEASURED:
        out.append(f"<p>Not yet measured: {_e(v.reason.split(':')[0])}. The command that would measure it:</p>")
        out.append("<pre>" + "\n".join(_e(c) for c in s.commands) + "</pre></section>")
        return "\n".join(out)
    if s.notes:
        out.append("<h3>What the notes got right or wrong</h3>" + "".join(f"<p>{_e(n)}</p>" for n in s.notes))
    out.append(
        '<h3>Setup</h3><dl class="setup">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(val)}</dd>" for k, val in s.setup) + "</dl>"
    )
    out.append("<h3>Results</h3>")
    for t in s.tables:
        out.append(
            f'<div class="table-title">{_e(t.title)}</div>'
            + _table(t.columns, t.rows)
            + (f'<p class="note">{_e(t.note)}</p>' if t.note else "")
        )
    out.append("<h3>The test</h3>" + _table(TEST_COLUMNS, [_part_row(p, html_outcome=True) for p in s.parts]))
    out.append(
        f'<h3>Verdict</h3><div class="verdict">{badge(v.label)}<span>{_e(v.reason)}</span></div>'
        f'<p class="rule">Rule: {_e(v.rule)}</p>'
    )
    if s.figures:
        out.append("<h3>Figures</h3>")
        out.append(
            '<div class="figs">'
            + "".join(
                f'<figure class="{"wide" if f.width > 760 else "half"}"><img src="{_e(f.file)}" alt="{_e(f.title)}">'
                f"<figcaption><b>{_e(f.title)}.</b> {_e(f.caption)}</figcaption></figure>"
                for f in s.figures
            )
            + "</div>"
        )
    if s.commands:
        cmds = " · ".join(f"<code>{_e(c)}</code>" for c in s.commands)
        out.append(f'<p class="note">To measure it more thoroughly: {cmds}</p>')
    out.append(
        f'<details><summary>All {len(s.runs)} MLflow runs behind this section</summary><p class="runs">'
        + " ".join(_cell(r) for r in s.runs)
        + "</p></details></section>"
    )
    return "\n".join(out)


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


def _part_row(p, html_outcome: bool = False) -> list:
    """One row of "The test" table for a verdict Part."""
    is_test = p.diff is not None and p.check is None
    stat = "–"
    if is_test and p.diff.stat == p.diff.stat:  # not NaN
        stat = "exact" if abs(p.diff.stat) == float("inf") else f"{p.diff.stat:.3g}"
    outcome = p.outcome
    if html_outcome:
        cls = {HOLDS: "holds", NOISE: "noise", FEW: "few"}.get(outcome, "fails")
        outcome = _Raw(f'<span class="outcome {cls}">{_e(p.outcome)}</span>')
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


def render_html(sections: list[Section], meta: Meta, style: str | None = None) -> str:
    """The whole report as one HTML page (figures referenced as files beside it)."""
    style = style if style is not None else resources.files("report").joinpath("templates/style.css").read_text()
    page = Template(resources.files("report").joinpath("templates/page.html").read_text())
    rows = []
    for row, s in zip(summary_rows(sections), sections):
        claim = _Raw(f'<a href="#claim-{_e(s.claim_id)}">{_e(s.claim_id)}</a><div class="gist">{_e(gist(s.claim))}</div>')
        rows.append([claim, _Raw(badge(row[1]))] + row[2:])
    counts = {
        label: sum(s.verdict.label == label for s in sections) for label in dict.fromkeys(s.verdict.label for s in sections)
    }
    head = [
        '<header class="top"><h1>ablation-bench: textbook deep-learning claims, measured on CIFAR-10</h1>',
        '<p class="meta">'
        + "".join(
            f"<span>{_e(x)}</span>"
            for x in [
                f"generated {meta.generated}",
                f"{meta.n_runs} runs from {meta.source}",
                "studies: " + (", ".join(meta.studies) or "none"),
                "code " + (", ".join(meta.commits) or "–"),
            ]
        )
        + "</p>",
        '<p class="meta">'
        + "".join(
            f"<span>{_e(x)}</span>"
            for x in ["data: " + ("; ".join(meta.data_sources) or "–"), "devices: " + ("; ".join(meta.devices) or "–")]
        )
        + (f"<span>this report in MLflow: {_cell(meta.report_run)}</span>" if meta.report_run else "")
        + '<span><a href="report.md">Markdown version</a></span></p></header>',
        '<h2>Summary</h2><p class="meta">' + " · ".join(f"{n} {_e(k)}" for k, n in counts.items()) + "</p>",
        _table(["claim", "verdict", "effect [95% CI] (headline comparison)", "seeds/arm", "profile", "device"], rows, "summary"),
        '<div class="box"><b>How to read this report</b><ul>' + "".join(f"<li>{_e(x)}</li>" for x in HOW_TO_READ) + "</ul></div>",
    ]
    body = "\n".join(head + [_section_html(s) for s in sections])
    return page.substitute(title="ablation-bench report", style=style, body=body)


# ---------------------------------------------------------------------------- Markdown
def _md(c: Cell) -> str:
    if isinstance(c, _Raw):
        return str(c)
    if isinstance(c, Link):
        return f"[{c.text}]({c.href})"
    if isinstance(c, list):
        return " ".join(_md(x) for x in c)
    return str(c).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: list[str], rows: list[list[Cell]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows])


def render_md(sections: list[Section], meta: Meta) -> str:
    out = [
        "# ablation-bench: textbook deep-learning claims, measured on CIFAR-10",
        "",
        f"Generated {meta.generated} from {meta.n_runs} runs in {meta.source}; studies: {', '.join(meta.studies) or 'none'}; "
        f"code {', '.join(meta.commits) or '–'}; data: {'; '.join(meta.data_sources) or '–'}; "
        f"devices: {'; '.join(meta.devices) or '–'}.",
        "",
        "## Summary",
        "",
    ]
    rows = [[f"[{r[0]}](#claim-{r[0]})"] + [f"**{r[1]}**"] + r[2:] for r in summary_rows(sections)]
    out += (
        [
            _md_table(["claim", "verdict", "effect [95% CI]", "seeds/arm", "profile", "device"], rows),
            "",
            "**How to read this report**",
            "",
        ]
        + [f"- {x}" for x in HOW_TO_READ]
        + [""]
    )
    for s in sections:
        v = s.verdict
        out += [
            f'<a id="claim-{s.claim_id}"></a>',
            "",
            f"## {s.claim_id} — {v.label}",
            "",
            f"> {s.claim}",
            "",
            f"*Settled by* ({', '.join(s.studies)} study): {s.settles}",
            "",
        ]
        if v.label == NOT_MEASURED:
            out += [
                f"Not yet measured: {v.reason.split(':')[0]}. The command that would measure it:",
                "",
                "```",
                *s.commands,
                "```",
                "",
            ]
            continue
        if s.notes:
            out += ["### What the notes got right or wrong", ""] + [f"{n}\n" for n in s.notes]
        out += ["### Setup", ""] + [f"- **{k}**: {val}" for k, val in s.setup] + ["", "### Results", ""]
        for t in s.tables:
            out += [f"**{t.title}**", "", _md_table(t.columns, t.rows), ""] + ([f"*{t.note}*", ""] if t.note else [])
        out += [
            "### The test",
            "",
            _md_table(TEST_COLUMNS, [_part_row(p) for p in s.parts]),
            "",
            "### Verdict",
            "",
            f"**{v.label}** — {v.reason}",
            "",
            f"*Rule:* {v.rule}",
            "",
        ]
        if s.figures:
            out += ["### Figures", ""] + [f"![{f.title}]({f.file})\n\n*{f.title}.* {f.caption}\n" for f in s.figures]
        out += [f"Runs: {' '.join(_md(r) for r in s.runs)}", ""]
    return "\n".join(out)
