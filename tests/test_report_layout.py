"""The report's architecture: analyses found by discovery, the claim-to-study map read from the study files alone
(a claim is added with claims.py and a study file), a user's own study gets the generic layout, small modules
with a docstring, and doors that point one way (no torch, no CLI in the report; no report in bench)."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.claims import CLAIMS, Claim
from report import studies
from report.claims import ANALYSES, analysis, discover
from report.figures import FigureMaker
from report.frame import read_runs
from report.sections import build_sections
from report.verdict import INCONCLUSIVE, NOT_MEASURED

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "runs.json.gz"
SHIPPED = [  # the claims of CLAIMS.md, each with its own analysis (a claim added later starts with the generic layout)
    "transfer",
    "nonlinearity",
    "sigmoid-saturation",
    "convergence-speed",
    "update-size",
    "leaky-vs-elu-noise",
    "input-normalization",
    "pca",
    "zero-init",
    "small-init-vanish",
    "xavier-vs-he",
    "batchnorm",
    "zero-centered",
    "learning-rate",
    "momentum",
    "adagrad-per-parameter",
    "adagrad-decay-rmsprop",
    "dropout",
    "fc-head",
    "resnet-depth",
    "localization",
]


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return read_runs(FIXTURE)


def sections(df: pd.DataFrame, **kw) -> dict:
    return {s.anchor: s for s in build_sections(df, FigureMaker(None), **kw)}


def copy_studies(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "studies"
    shutil.copytree(ROOT / "studies", folder)
    monkeypatch.setenv("BENCH_STUDIES_DIR", str(folder))
    return folder


def test_every_topic_module_registers_its_analyses_by_discovery():
    registry = discover()
    assert set(SHIPPED) <= set(registry) <= set(CLAIMS)
    modules = {fn.__module__ for fn in registry.values()}
    files = {f"report.claims.{p.stem}" for p in (ROOT / "report" / "claims").glob("*.py") if p.stem != "__init__"}
    assert modules == files  # every topic module holds an analysis, and every analysis lives in one
    with pytest.raises(KeyError, match="unknown claim id"):
        analysis("no-such-claim")
    with pytest.raises(ValueError, match="two analyses"):
        analysis("dropout")(lambda ev: None)
    assert ANALYSES["dropout"].__module__ == "report.claims.dropout"


def test_the_claim_to_study_map_comes_from_the_study_files(tmp_path, monkeypatch, runs):
    folder = copy_studies(tmp_path, monkeypatch)  # the init study renamed: its file and its runs
    text = (folder / "init.toml").read_text().replace('name = "init"', 'name = "inits"')
    (folder / "inits.toml").write_text(text)
    (folder / "init.toml").unlink()
    assert studies.claim_studies("zero-init") == ["inits"] and studies.claim_studies("convergence-speed") == [
        "activation",
        "optimizer",
    ]
    renamed = runs.assign(study=runs["study"].replace("init", "inits"))
    sec = sections(renamed, study="inits")["claim-zero-init"]
    assert sec.studies == ["inits"] and sec.verdict.label != NOT_MEASURED and "no decision rule" not in sec.verdict.reason
    assert sec.setup[0][0] == "Study" and sec.setup[0][1].startswith("inits (") and "inits.toml" in sec.setup[0][1]


def test_adding_a_claim_needs_claims_py_and_a_study_file_and_gets_the_generic_layout(tmp_path, monkeypatch, runs):
    monkeypatch.setitem(CLAIMS, "dropout-width", Claim("Wider nets need more dropout.", "Dropout rate x width."))
    folder = copy_studies(tmp_path, monkeypatch)
    path = folder / "dropout.toml"
    path.write_text(path.read_text().replace('claims = ["dropout"]', 'claims = ["dropout", "dropout-width"]'))
    secs = sections(runs, study="dropout")
    new = secs["claim-dropout-width"]
    assert new.studies == ["dropout"] and new.claim == "Wider nets need more dropout."
    assert new.verdict.label == INCONCLUSIVE and "no decision rule" in new.verdict.reason and new.tables and new.runs
    assert "no decision rule" not in secs["claim-dropout"].verdict.reason  # the claim beside it keeps its analysis


def test_a_users_own_study_gets_a_generic_section_of_its_own(runs):
    shipped = runs[runs["study"] == "dropout"]
    own = shipped[shipped["stage"] == "final"].assign(study="my-dropout")
    secs = sections(pd.concat([shipped, own]))
    sec = secs["study-my-dropout"]
    assert sec.title == "your study my-dropout" and sec.studies == ["my-dropout"] and "dropout" in sec.claim
    assert sec.tables[0].rows and len(sec.runs) == len(own) and "no decision rule" in sec.verdict.reason
    assert "bench study ./my-dropout.toml --profile quick" in sec.commands
    assert len([s for s in secs.values() if not s.title]) == len(CLAIMS)  # the claims keep their sections
    assert secs["claim-dropout"].verdict.label != NOT_MEASURED and secs["claim-dropout"].studies == ["dropout"]
    only = sections(pd.concat([shipped, own]), study="my-dropout")
    assert list(only) == ["study-my-dropout"]


def test_report_modules_are_small_and_open_with_a_one_line_docstring():
    for path in sorted((ROOT / "report").rglob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.splitlines()[0].strip(), f"{path} has no opening docstring"
        assert len(text.splitlines()) <= 400, f"{path}: {len(text.splitlines())} lines (aim: at most ~400)"


def imports(path: Path, top_only: bool) -> list[str]:
    """The modules a file imports (absolute names; relative ones resolved), at its top level only or anywhere."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in tree.body if top_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            out.append(".".join(x for x in (base, node.module) if x))
    return out


def test_doors_point_one_way_in_the_source():
    """bench never imports the report at module level (bench/cli.py does inside its commands); the report never
    imports torch, the training engine, the data room, perf or the CLI, not even inside a function. The
    transitive check runs in a fresh interpreter in test_report.py."""
    for path in sorted((ROOT / "bench").rglob("*.py")):
        bad = [m for m in imports(path, top_only=True) if m == "report" or m.startswith("report.")]
        assert not bad, f"{path} imports {bad} at module level"
    forbidden = ("torch", "torchvision", "bench.cli", "bench.engine", "bench.data", "bench.perf")
    for path in sorted((ROOT / "report").rglob("*.py")):
        bad = [m for m in imports(path, top_only=False) if m.startswith(forbidden)]
        assert not bad, f"{path} imports {bad}"
    assert "report.build" in imports(ROOT / "bench" / "cli.py", top_only=False)  # the scan sees lazy imports


def test_analyses_handle_arms_they_do_not_name(runs):
    """A study file that gains an arm (e.g. gelu and silu in the activation study) still gets its analyses."""
    extra = []
    for _, finals in runs[runs["stage"] == "final"].groupby("study"):
        first = finals[finals["arm"] == finals["arm"].iloc[0]]
        factor = next(c for c in first.columns if c.startswith("factor.") and first[c].notna().all())
        new = first.assign(arm=first["arm"] + "-new", start_time=first["start_time"] + 10**12, run_id=first["run_id"] + "n")
        extra.append(new.assign(**{factor: first[factor] + "-new"}))
    secs = sections(pd.concat([runs, *extra]))
    for sec in secs.values():
        assert "analysis failed" not in sec.verdict.reason, (sec.claim_id, sec.verdict.reason)
    for claim in ("dropout", "sigmoid-saturation", "batchnorm"):  # per-arm tables list the new arm beside the others
        assert any(str(row[0]).endswith("-new") for t in secs[f"claim-{claim}"].tables for row in t.rows), claim
