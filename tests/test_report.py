"""The report on the committed fixtures (tests/fixtures/runs.json.gz and extras.json.gz, made by
scripts/make_report_fixture.py from real smoke runs): tables, sections, links, figures, verdicts."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import report.frame as frame
from bench.claims import CLAIMS
from report.build import write_report
from report.claims import discover
from report.figures import FigureMaker
from report.frame import compact, read_extras, read_runs
from report.section import fmt
from report.sections import build_sections
from report.studies import claim_studies
from report.verdict import INCONCLUSIVE, NOT_MEASURED, PARTLY, SUPPORTED

FIXTURE = Path(__file__).parent / "fixtures" / "runs.json.gz"
EXTRAS = FIXTURE.with_name("extras.json.gz")
CORE = {
    "init",
    "activation",
    "optimizer",
    "dropout",
    "batchnorm",
    "resnet-depth",
    "normalization",
    "pca",
    "lr-schedule",
    "activation-noise",
}
NEW = {"input-normalization": "norm-", "pca": "pca-", "learning-rate": "lr-", "leaky-vs-elu-noise": "noise-"}
VERDICTS = {"supported", "partly supported", "contradicted", "inconclusive", NOT_MEASURED}


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return read_runs(FIXTURE)


@pytest.fixture(scope="module")
def built(runs, tmp_path_factory):
    """The full report (with figures) built once from the fixture."""
    out = tmp_path_factory.mktemp("report")
    index, sections = write_report(runs, out, source="fixture", extras=read_extras(EXTRAS))
    return out, sections, index.read_text()


def sections_of(df: pd.DataFrame, study: str) -> dict:
    return {s.claim_id: s for s in build_sections(df, FigureMaker(None), study)}


def test_compact_keeps_every_value_and_holds_text_as_objects(runs):
    """What the analyses read (report/frame.py, compact): the same values and missing values, text columns as
    Python strings; a frame without text columns is returned as it is."""
    assert any(isinstance(t, pd.StringDtype) for t in runs.dtypes)  # pandas 3 reads the fixture's text this way
    packed = compact(runs)
    assert not any(isinstance(t, pd.StringDtype) for t in packed.dtypes) and list(packed.columns) == list(runs.columns)
    pd.testing.assert_frame_equal(packed, runs, check_dtype=False)
    assert packed["arm"].map(type).eq(str).all() and packed["arm"].tolist() == runs["arm"].tolist()
    numbers = runs[["seed", "test_acc"]]
    assert compact(numbers) is numbers


def test_fixture_is_small_real_and_complete(runs):
    assert FIXTURE.stat().st_size < 2_000_000
    assert CORE <= set(runs["study"])
    finals = runs[runs["stage"] == "final"]
    assert (finals.groupby(["study", "arm"])["seed"].nunique() >= 2).all()
    assert {"tune", "final"} <= set(runs["stage"])
    assert finals["data_source"].notna().all() and finals["device"].notna().all()


def test_every_column_is_documented_in_the_frame_docstring(runs):
    doc = frame.__doc__
    for col in runs.columns:
        name = re.sub(r"\bL\d\d\b", "Lxx", re.sub(r"\bA\d\d\b", "Axx", col))
        family = next((f for f in ("history.<m>", "config.<key>", "factor.<name>") if name.startswith(f.split("<")[0])), name)
        assert family in doc, f"column {col!r} is not documented in report/frame.py"


def test_every_claim_has_a_section_and_a_summary_row(built):
    _, sections, html = built
    assert [s.claim_id for s in sections] == list(CLAIMS)
    summary = html[html.index('id="summary"') : html.index("</table>", html.index('id="summary"'))]
    assert summary.count("<tr>") == len(CLAIMS) + 1  # header + one row per claim
    for cid in CLAIMS:
        assert f'id="claim-{cid}"' in html and f'href="#claim-{cid}"' in summary


def test_verdicts_come_from_the_allowed_set_with_their_rule(built):
    _, sections, html = built
    for s in sections:
        assert s.verdict.label in VERDICTS
        assert "analysis failed" not in s.verdict.reason, s.verdict.reason
        if s.verdict.label != NOT_MEASURED:
            assert s.parts and s.verdict.reason and "Rule:" in html


def test_claims_without_runs_show_not_yet_measured_and_the_command(built):
    _, sections, html = built
    by_id = {s.claim_id: s for s in sections}
    for cid in CLAIMS:
        studies = claim_studies(cid)
        if not CORE & set(studies):
            assert by_id[cid].verdict.label == NOT_MEASURED
            for study in studies:
                assert f"bench study {study} --profile quick" in html and f"make study NAME={study}" in html


def test_every_claim_has_a_study_file_listing_it_and_a_section(built):
    _, sections, html = built
    by_id = {s.claim_id: s for s in sections}
    for cid in CLAIMS:
        assert claim_studies(cid), f"no study file lists the claim {cid!r} (its `claims`)"
        assert cid in by_id and by_id[cid].studies == claim_studies(cid) and f'id="claim-{cid}"' in html


def test_every_core_claim_has_a_dedicated_analysis():
    analyses = discover()
    for cid in CLAIMS:
        if CORE & set(claim_studies(cid)):
            assert cid in analyses, cid


def test_results_table_values_match_the_frame(runs, built):
    _, sections, _ = built
    sec = next(s for s in sections if s.claim_id == "zero-init")
    table = sec.tables[0]
    col = table.columns.index("test acc")
    init = runs[(runs["study"] == "init") & (runs["stage"] == "final")]
    for row in table.rows:
        accs = init.loc[init["arm"] == row[0], "test_acc"].astype(float)
        accs = accs.fillna(0.10)  # diverged runs count as chance
        assert row[col].startswith(fmt(accs.mean() * 100)), (row[0], row[col])
        assert row[1] == str(init.loc[init["arm"] == row[0], "seed"].nunique())


def test_setup_names_data_device_epochs_and_tuned_learning_rates(runs, built):
    _, sections, _ = built
    act = dict(next(s for s in sections if s.claim_id == "nonlinearity").setup)
    finals = runs[(runs["study"] == "activation") & (runs["stage"] == "final")]
    assert finals["data_source"].iloc[0] in act["Data"]
    assert finals["device"].iloc[0] in act["Device"]
    assert act["Epochs"] == str(int(finals["config.epochs"].iloc[0]))
    assert "Tuned lr:" in act["Tuning"] and all(arm in act["Tuning"] for arm in finals["arm"])
    init = dict(next(s for s in sections if s.claim_id == "zero-init").setup)
    assert init["Tuning"].startswith("none")


def test_every_final_run_links_to_its_mlflow_page(runs, built):
    _, _, html = built
    for _, r in runs[runs["stage"] == "final"].iterrows():
        if r["study"] in CORE:
            assert f"#/experiments/{r['experiment_id']}/runs/{r['run_id']}" in html


def test_figures_exist_and_are_referenced_by_both_documents(built):
    out, sections, html = built
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 15
    for src in images:
        assert (out / src).stat().st_size > 5000, src
    md = (out / "report.md").read_text()
    assert all(f"]({src})" in md for src in images)
    assert all(f"claim-{cid}" in md for cid in CLAIMS)


def test_input_pca_schedule_and_noise_sections_have_tables_tests_and_figures(built):
    out, sections, html = built
    by_id = {s.claim_id: s for s in sections}
    for cid, prefix in NEW.items():
        sec = by_id[cid]
        assert sec.verdict.label in VERDICTS - {NOT_MEASURED} and len(sec.tables) >= 2 and sec.parts, cid
        assert all(p.runs for p in sec.parts) and sec.notes
        figs = [f.file for f in sec.figures]
        assert figs and all(f.startswith(f"figures/{prefix}") and (out / f).exists() for f in figs), (cid, figs)
    lr = by_id["learning-rate"]
    assert any(f.file == "figures/lr-classic.png" for f in lr.figures) and any(
        f.file == "figures/lr-heatmap.png" for f in lr.figures
    )


def test_momentum_shows_the_trajectories_extra_when_the_fixture_has_it(built):
    _, sections, html = built
    momentum = next(s for s in sections if s.claim_id == "momentum")
    traj = read_extras(EXTRAS).get("optimizer", {}).get("trajectories")
    if traj is None:
        assert "bench study optimizer" in " ".join(momentum.notes)
        return
    assert 'src="figures/opt-trajectories.png"' in html and traj["run_id"] in html
    table = momentum.tables[-1]
    assert {r[0] for r in table.rows} == set(traj["surfaces"]) and "steep-axis reversals" in table.columns


def _init_with(runs: pd.DataFrame, he: list[float], xavier: list[float]) -> pd.DataFrame:
    """The fixture with the test accuracy of the deepest He/Xavier ReLU arms replaced."""
    df = runs.copy()
    final = (df["study"] == "init") & (df["stage"] == "final") & (df["factor.activation"] == "relu")
    deepest = df.loc[final, "config.depth"].max()
    for init, accs in (("he", he), ("xavier", xavier)):
        m = final & (df["factor.init"] == init) & (df["config.depth"] == deepest)
        df.loc[m, "status"] = "ok"
        df.loc[m, "test_acc"] = [accs[int(s)] for s in df.loc[m, "seed"]]
    return df


def test_constructed_cases_drive_the_claim_verdict(runs):
    clear = sections_of(_init_with(runs, he=[0.50, 0.51], xavier=[0.30, 0.31]), "init")["xavier-vs-he"]
    assert clear.verdict.label == SUPPORTED, clear.verdict.reason
    same = sections_of(_init_with(runs, he=[0.40, 0.42], xavier=[0.41, 0.40]), "init")["xavier-vs-he"]
    assert same.verdict.label == PARTLY and "within noise" in same.verdict.reason  # std part holds, accuracy not
    one_seed = sections_of(runs[runs["seed"] != 1], "init")["xavier-vs-he"]
    assert one_seed.verdict.label == INCONCLUSIVE and "fewer than 2 seeds" in one_seed.verdict.reason


def test_diverged_runs_are_counted_in_the_section(runs):
    df = runs.copy()
    m = (df["study"] == "dropout") & (df["stage"] == "final") & (df["arm"] == "p0.7")
    df.loc[m, ["status", "test_acc", "train_acc"]] = ["diverged", math.nan, math.nan]
    table = sections_of(df, "dropout")["dropout"].tables[0]
    row = next(r for r in table.rows if r[0] == "p0.7")
    assert row[2] == f"{int(m.sum())}/{int(m.sum())}" and row[table.columns.index("test acc")].startswith("10 ")


def test_report_code_never_imports_torch_the_engine_or_the_cli():
    code = (  # every report module, every analysis registered: nothing they pull in, however indirectly, is forbidden
        "import sys, report.build, report.sections, report.sources, report.bundle, report.render, report.load\n"
        "from report.claims import discover\ndiscover()\n"
        "bad = [m for m in sys.modules if m.startswith(('torch', 'bench.cli', 'bench.engine', 'bench.data', 'bench.perf'))]\n"
        "assert not bad, f'the report imported {bad}'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


class SummaryCells(HTMLParser):
    """The summary table's rows as text cells; a cell's tags (div.tags span) kept apart from its text."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell, self.tags, self.in_tag, self.in_gist = [], None, None, False, False

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self.cell, self.tags = [], []
        elif tag == "span" and cls == "tag":
            self.in_tag = True
        elif tag == "div" and cls == "gist":
            self.in_gist = True

    def handle_endtag(self, tag):
        if tag == "td":
            self.rows[-1].append(("".join(self.cell).strip(), self.tags))
            self.cell = None
        elif tag == "span":
            self.in_tag = False
        elif tag == "div":
            self.in_gist = False

    def handle_data(self, data):
        if self.cell is None or self.in_gist:
            return
        (self.tags if self.in_tag else self.cell).append(data)


def test_verdicts_json_and_csv_hold_the_summary_tables_values(built):
    out, _, html = built
    table = html[html.index('id="summary"') : html.index("</table>", html.index('id="summary"'))]
    parser = SummaryCells()
    parser.feed(table)
    shown = [row for row in parser.rows if row]  # the header row has no td
    rows = json.loads((out / "verdicts.json").read_text())
    heads = [r for r in rows if r["headline"]]
    assert len(shown) == len(heads) == len(CLAIMS)
    for cells, r in zip(shown, heads):
        (claim, _), (verdict, _), (effect, _), (scale, tags), (seeds, _) = cells
        assert (claim, verdict, effect) == (r["claim"], r["verdict"], r["effect"])
        assert r["scale"] == (f"{scale} ({', '.join(tags)})" if tags else scale)
        assert seeds == ("–" if r["seeds_per_arm"] is None else str(r["seeds_per_arm"]))
        if r["effect_value"] is not None:  # the numbers behind the text: "+2.1 pts [-8.72, 12.9]"
            assert fmt(abs(r["effect_value"])) in effect
        if r["ci_low"] is not None:
            assert r["ci_low"] <= r["effect_value"] <= r["ci_high"] and f"[{fmt(r['ci_low'])}, " in effect
    csv = pd.read_csv(out / "verdicts.csv")
    assert list(csv["claim"]) == [r["claim"] for r in rows] and list(csv["verdict"]) == [r["verdict"] for r in rows]
