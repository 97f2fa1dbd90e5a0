"""Every command the README and docs/ show runs: each `bench ...` line of a ```bash block parses with the real
parser of bench/cli.py, each `make ...` names a target of the Makefile, each `scripts/gpu-slot` option exists;
every relative link and #anchor of those pages resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "studies" / "README.md", ROOT / "results" / "README.md"]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def bash_lines(text: str) -> list[str]:
    """The command lines of every ```bash block: continuations joined, heredoc bodies left out."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        block = block.replace("\\\n", " ")
        heredoc = None
        for line in block.splitlines():
            if heredoc is not None:
                heredoc = None if line.strip() == heredoc else heredoc
                continue
            if m := re.search(r"<<-?\s*'?(\w+)'?", line):
                heredoc = m.group(1)
            out.append(line)
    return out


def commands(line: str) -> list[list[str]]:
    """The bench, make and scripts/gpu-slot commands of one shell line, as words (comments, env assignments,
    nohup and redirections dropped; `python3 -m bench` counts as bench)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    found, current, target_next = [], [], False
    for word in [*words, ";"]:
        if target_next:  # the file of a redirection
            target_next = False
        elif word in ("&&", "||", ";", "|", "&") or word.endswith(";"):
            found.append(current)
            current = []
        elif re.fullmatch(r"\d?>>?|<", word):
            target_next = True
        elif not re.fullmatch(r"\d?>>?\S+|\d?>&\d|<\S+", word):
            current.append(word)
    out = []
    for cmd in found:
        while cmd and (cmd[0] == "nohup" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", cmd[0])):
            cmd = cmd[1:]
        if cmd[:3] == ["python3", "-m", "bench"] or cmd[:3] == ["python", "-m", "bench"]:
            cmd = ["bench", *cmd[3:]]
        if cmd and cmd[0] in ("bench", "make", "scripts/gpu-slot"):
            out.append(cmd)
    return out


def documented_commands() -> list[tuple[str, list[str]]]:
    return [(p.relative_to(ROOT).as_posix(), c) for p in PAGES for line in bash_lines(p.read_text()) for c in commands(line)]


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), flags=re.M))


def command_error(cmd: list[str]) -> str | None:
    """Why `cmd` would not run as written, or None."""
    if cmd[0] == "bench":
        try:
            build_parser().parse_args(cmd[1:])
        except SystemExit as exc:
            return f"bench's parser refuses it (exit {exc.code})"
        return None
    if cmd[0] == "make":
        missing = [w for w in cmd[1:] if "=" not in w and not w.startswith("-") and w not in make_targets()]
        return f"no Makefile target {missing}" if missing else None
    script = (ROOT / cmd[0]).read_text()
    unknown = [w for w in cmd[1:] if w.startswith("--") and f"{w})" not in script]
    return f"unknown options {unknown}" if unknown else None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_the_pages_show_commands():
    cmds = documented_commands()
    assert {c[0] for _, c in cmds} == {"bench", "make", "scripts/gpu-slot"}
    assert ["make", "test"] in [c for page, c in cmds if page == "README.md"]


@pytest.mark.parametrize("page,cmd", documented_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_documented_command_parses(page, cmd, capsys):
    assert command_error(cmd) is None, f"{page}: `{' '.join(cmd)}`: {command_error(cmd)}"


def test_a_bad_command_is_caught(capsys):
    """The check can fail: an unknown option, subcommand, make target or script option is reported."""
    assert command_error(["bench", "study", "init", "--no-such-option"])
    assert command_error(["bench", "no-such-command"])
    assert command_error(["make", "no-such-target"])
    assert command_error(["scripts/gpu-slot", "--no-such-option", "1"])
    assert command_error(["bench", "import", "a.json.gz", "--as-source"]) is None
    assert commands("nohup make reference WORKERS=2 > reference.log 2>&1 &") == [["make", "reference", "WORKERS=2"]]


def test_ci_runs_the_test_command_the_readme_names():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = [c for line in bash_lines((ROOT / "README.md").read_text()) for c in commands(line)]
    assert ["make", "test"] in readme and re.search(r"^make test$", ci, flags=re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_shows_the_shipped_reference_summary_as_it_is():
    """The README's claims table is results/reference/summary.md's (what `make reference` wrote), not a stale copy."""
    summary = (ROOT / "results" / "reference" / "summary.md").read_text()
    table = summary[: summary.index("\n![")]
    assert table.count("\n| ") >= 20 and table in (ROOT / "README.md").read_text()


def test_the_readme_per_study_table_has_each_studys_quick_seeds_and_trials(tmp_path, monkeypatch):
    """The README's per-study table (seeds, trials, --plan estimate at quick) follows the study files: a changed
    seed count or arm list fails here until the row is updated."""
    from bench.api import plan
    from bench.study.files import list_studies

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))  # the committed estimates, not a table this machine measured

    rows = re.findall(r"^\| ([\w-]+) \| (\d+) \| (\d+) \| ([\d.]+ (?:min|h)) \|", (ROOT / "README.md").read_text(), flags=re.M)
    studies = {s.name: s for s in list_studies()}
    assert sorted(r[0] for r in rows) == sorted(studies)
    for name, seeds, trials, estimate in rows:
        total = plan(name, profile="quick", device="cpu")["total"]
        minutes = total["seconds"] / 60
        shown = f"{minutes:.0f} min" if minutes < 59.5 else f"{minutes / 60:.1f} h"
        assert (int(seeds), int(trials), estimate) == (len(studies[name].seeds("quick")), total["trials"], shown), name
