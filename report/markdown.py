"""Claim views -> the report as Markdown (the same content as the HTML page), and the short summary table
(claim, verdict, headline effect, scale) that the README opens with."""

from __future__ import annotations

import shutil
from pathlib import Path

from .render import HOW_TO_READ, TEST_COLUMNS, Meta, compare_rows, effect_text, part_row, scale_text, summary_rows
from .section import Cell, Link, Section
from .sources import View
from .verdict import NOT_MEASURED


def _md(c: Cell) -> str:
    if isinstance(c, Link):
        return f"[{c.text}]({c.href})" if c.href else f"`{c.text}`"
    if isinstance(c, list):
        return " ".join(_md(x) for x in c)
    return str(c).replace("|", "\\|").replace("\n", " ")


def md_table(columns: list[str], rows: list[list[Cell]]) -> str:
    lines = ["| " + " | ".join(_md(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows])


def _panel(s: Section) -> list[str]:
    v, sc = s.verdict, s.scale
    out = []
    if sc is not None:
        out += [f"- **Scale**: {scale_text(sc)}"] + [f"- **How much exists**: {p}" for p in sc.progress]
        out += [f"- **Study definition**: {m}" for m in sc.mismatch] + [f"- **Literature**: {t}" for t in sc.literature]
        out += [f"- **MLflow**: {' · '.join(_md(link) for link in s.study_links)}"] if s.study_links else []
        out += [""]
    if s.notes:
        out += ["**What the notes got right or wrong**", ""] + [f"{n}\n" for n in s.notes]
    out += ["**Setup**", ""] + [f"- **{k}**: {val}" for k, val in s.setup] + [""]
    for t in s.tables:
        out += [f"**{t.title}**", "", md_table(t.columns, t.rows), ""] + ([f"*{t.note}*", ""] if t.note else [])
    out += ["**The test**", "", md_table(TEST_COLUMNS, [part_row(p) for p in s.parts]), ""]
    out += [f"**Verdict: {v.label}** — {v.reason}", "", f"*Rule:* {v.rule}", ""]
    out += [f"![{f.title}]({f.file})\n\n*{f.title}.* {f.caption}\n" for f in s.figures]
    return out + [f"Runs: {' '.join(_md(r) for r in s.runs)}", ""]


def render_md(vs: list[View], meta: Meta) -> str:
    sources = [m.heading for m in meta.sources]
    out = ["# ablation-bench: textbook deep-learning claims, measured on CIFAR-10", "", f"Generated {meta.generated} from:", ""]
    out += [f"- **{m.heading}**: {m.line()}" for m in meta.sources] + ["", "## Summary", ""]
    rows = [[f"[{r[0]}](#claim-{r[0]})", f"**{r[1]}**", *r[2:]] for r in summary_rows(vs, sources)]
    columns = ["claim", "verdict", "effect [95% CI]", "scale", "seeds/arm"] + (sources if len(sources) > 1 else [])
    out += [md_table(columns, rows), "", "**How to read this report**", ""] + [f"- {x}" for x in HOW_TO_READ] + [""]
    for v in vs:
        s = v.headline
        out += [f'<a id="{s.anchor}"></a>', "", f"## {s.title or s.claim_id} — {s.verdict.label}", "", f"> {s.claim}", ""]
        out += [f"*Settled by* ({', '.join(s.studies)} study): {s.settles}", ""]
        if s.verdict.label == NOT_MEASURED:
            reason = s.verdict.reason.split(":")[0]
            out += [f"Not yet measured: {reason}. The command that would measure it:", "", "```", *s.commands, "```", ""]
            continue
        if len(v.entries) == 1:
            out += _panel(s)
            continue
        rows, parts = compare_rows(v.entries)
        names = [e.source for e in v.entries]
        out += [f"### By source (headline: {s.source})", "", md_table(["", *names], rows), ""]
        out += ["**Each part of the claim, by source**", "", md_table(["part of the claim", *names], parts), ""]
        for e in v.entries:
            out += [f"### {e.source} — {e.verdict.label}", ""] + _panel(e)
    return "\n".join(out)


ROOT = Path(__file__).resolve().parents[1]  # the repository: the README's folder


def summary_md(headlines: list[Section], figure: str = "", link: str = "") -> str:
    """The README's opening table: claim, verdict, headline effect and scale of each claim (its headline source),
    then `figure` (a path relative to the README) and a `link` to the full report."""
    rows = [[s.claim_id, f"**{s.verdict.label}**", effect_text(s), scale_text(s.scale)] for s in headlines if not s.title]
    out = [md_table(["claim", "verdict", "headline effect [95% CI]", "scale"], rows), ""]
    if figure:
        out += [f"![one figure of the report]({figure})", ""]
    if link:
        out += [f"The full report, with every part, interval, figure and run: {link}", ""]
    return "\n".join(out)


def write_summary(headlines: list[Section], out: Path, summary: Path, figure: str) -> Path | None:
    """Write summary_md to `summary` and copy the report's figure `figure` (from the headline section that drew it)
    beside it; returns the copied figure's path (None when no section drew that figure)."""
    src = next((f.file for s in headlines for f in s.figures if Path(f.file).name.startswith(figure)), None)
    dest = None
    if src is not None:
        dest = summary.parent / f"{figure}.png"
        shutil.copyfile(Path(out) / src, dest)
    ref = ""
    if dest is not None:
        try:
            ref = str(dest.resolve().relative_to(ROOT))  # as the README at the repository's root links it
        except ValueError:
            ref = dest.name
    summary.write_text(summary_md(headlines, ref, "`make report` writes `report/out/index.html`"), encoding="utf-8")
    return dest
