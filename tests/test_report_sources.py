"""Results from several sources on the committed fixture (no training): bundles round-trip the frame and read with
pandas alone, a report from a bundle reads as the report from its runs, the larger scale gives the headline while
each source keeps its verdict, and each verdict states its scale: how much of the study exists, how the runs differ
from the study file now, the reference arm beside the literature, and the seeds a part within noise would need."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps

from bench.cli import main
from bench.study.bundles import read_bundle, write_bundle
from report import studies
from report.build import assemble, write_report
from report.bundle import make_bundle
from report.frame import is_missing, read_extras, read_runs
from report.markdown import write_summary
from report.metrics import final_acc, learning_area
from report.render import summary_rows
from report.section import fmt, fmt_diff
from report.sources import Source, from_bundle
from report.stats import LEVEL, Diff, seeds_to_detect
from report.verdict import NOT_MEASURED, Part, decide, needed_text

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "runs.json.gz"
EXTRAS = FIXTURE.with_name("extras.json.gz")


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return read_runs(FIXTURE)


@pytest.fixture(scope="module")
def bundle_path(runs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "reference.json.gz"
    return write_bundle(make_bundle(runs, read_extras(EXTRAS), studies.shipped(), "reference"), path)


def records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not is_missing(v)} for r in df.drop(columns=["url"], errors="ignore").to_dict("records")
    ]


def headlines(sources: list[Source], study: str | None = None) -> dict:
    return {v.headline.anchor: v for v in assemble(sources, None, study)}


def test_a_bundle_round_trips_the_frame_and_pandas_reads_it(runs, bundle_path):
    doc = json.load(gzip.open(bundle_path))
    plain = pd.DataFrame(doc["runs"])  # pandas alone, no MLflow
    assert records(plain) == records(runs) and "url" not in plain
    back = read_bundle(bundle_path)
    assert records(back.runs) == records(runs) and back.label == "reference"
    init = doc["studies"]["init"]
    finals = runs[(runs["study"] == "init") & (runs["stage"] == "final")]
    assert init["profile"] == "smoke" and init["provenance"]["final_runs"] == len(finals)
    assert init["provenance"]["device"] == sorted(set(finals["device"])) and init["provenance"]["data_digest"]
    assert list(init["definition"]["arms"]) == [a.name for a in studies.get("init").arms("smoke")]
    assert init["definition"]["profile_base"] == studies.get("init").profiles["smoke"].base
    assert back.extras["optimizer"]["trajectories"]["steps"] == read_extras(EXTRAS)["optimizer"]["trajectories"]["steps"]


@pytest.mark.parametrize("study", ["init", "optimizer"])  # the optimizer's with its trajectories extra
def test_the_report_from_a_bundle_reads_as_the_report_from_its_runs(runs, bundle_path, study):
    direct = assemble([Source("your runs", "fixture", runs, read_extras(EXTRAS))], None, study)
    bundled = assemble([from_bundle(bundle_path)], None, study)
    assert summary_rows(direct, ["x"]) == summary_rows(bundled, ["x"]) and len(direct) == len(studies.get(study).claims)
    for a, b in zip(direct, bundled):
        assert [(p.assertion, p.outcome, fmt_diff(p)) for p in a.headline.parts] == [
            (p.assertion, p.outcome, fmt_diff(p)) for p in b.headline.parts
        ]
        assert all(link.href == "" for link in b.headline.runs)  # the bundle's runs live in the exporting store


def test_the_larger_scale_gives_the_headline_and_each_source_keeps_its_verdict(runs):
    smoke = Source("reference", "a", runs)
    quick = Source("your runs", "b", runs.assign(profile="quick"))  # as many seeds as the reference, larger scale
    for order in ([smoke, quick], [quick, smoke]):
        views = headlines(order, "init")
        view = views["claim-xavier-vs-he"]
        assert view.headline.source == "your runs · quick · CPU" and view.headline.verdict.n_seeds == 2
        assert {e.source for e in view.entries} == {"reference · smoke · CPU", "your runs · quick · CPU"}
        rows = {r[0]: r for r in summary_rows(list(views.values()), [s.heading() for s in order])}
        assert rows["xavier-vs-he"][3].startswith("quick · ") and "small scale" in rows["xavier-vs-he"][3]


def test_a_larger_scale_with_too_few_seeds_leaves_the_headline_to_a_complete_smaller_one(runs):
    """A `full` (here quick) source just started, with one seed per arm, is shown beside the reference but does
    not give the headline verdict."""
    smoke = Source("reference", "a", runs)
    quick = Source("your runs", "b", runs[runs["seed"] == 0].assign(profile="quick"))  # one seed: inconclusive
    for order in ([smoke, quick], [quick, smoke]):
        views = headlines(order, "init")
        view = views["claim-xavier-vs-he"]
        assert view.headline.source == "reference · smoke · CPU" and view.headline.verdict.n_seeds == 2
        assert {e.source for e in view.entries} == {"reference · smoke · CPU", "your runs · quick · CPU"}
        quick_verdict = next(e for e in view.entries if e.source.startswith("your runs")).verdict
        assert quick_verdict.label == "inconclusive" and "fewer than 2 seeds" in quick_verdict.reason
        rows = {r[0]: r for r in summary_rows(list(views.values()), [s.heading() for s in order])}
        assert rows["xavier-vs-he"][1] == view.headline.verdict.label and rows["xavier-vs-he"][3].startswith("smoke · ")
        assert "inconclusive" in rows["xavier-vs-he"][5:]


def scale_of(views: dict, claim: str):
    return views[f"claim-{claim}"].headline.scale


def test_runs_that_differ_from_the_study_file_are_labelled(runs, bundle_path):
    df = runs.copy()
    arm = studies.get("init").arms("smoke")[0]
    key, value = next((k, v) for k, v in {**studies.get("init").base, **arm.overrides}.items() if isinstance(v, (int, float)))
    m = (df["study"] == "init") & (df["arm"] == arm.name)
    df.loc[m, f"config.{key}"] = value * 3 + 1
    df.loc[(df["study"] == "init") & (df["arm"] == arm.name) & (df["seed"] == 1), "arm"] = "lecun+relu+d10"
    sc = scale_of(headlines([Source("your runs", "x", df)], "init"), "zero-init")
    text = " ".join(sc.mismatch)
    assert (
        f"{key} {fmt(float(value * 3 + 1))} (file: {value})" in text
        and "arms not in studies/init.toml now: lecun+relu+d10" in text
    )
    assert "other study definition" in sc.labels()

    b = read_bundle(bundle_path)
    recorded = b.studies["init"]["definition"]
    recorded["seeds"] = 3
    dropped = next(iter(recorded["arms"]))
    del recorded["arms"][dropped]
    sc = scale_of(headlines([Source("reference", "y", b.runs, b.extras, b.studies)], "init"), "zero-init")
    text = " ".join(sc.mismatch)
    assert f"measured with 3 seeds per arm; studies/init.toml now asks {studies.get('init').profiles['smoke'].seeds}" in text
    assert f"now also has arms {dropped}" in text


def test_a_study_with_runs_missing_says_how_much_exists(runs, bundle_path):
    b = read_bundle(bundle_path)
    b.studies["dropout"]["definition"]["seeds"] = 2  # the fixture's runs were made with two seeds
    arms = list(b.studies["dropout"]["definition"]["arms"])
    df = b.runs
    gone = (
        (df["study"] == "dropout")
        & (df["stage"] == "final")
        & ((df["arm"] == arms[1]) | ((df["arm"] == arms[2]) & (df["seed"] == 1)))
    )
    sc = scale_of(headlines([Source("reference", "y", df[~gone], b.extras, b.studies)], "dropout"), "dropout")
    total = 2 * len(arms)
    assert sc.progress == [
        f"dropout: {total - 3} of {total} final runs; arms missing: {arms[1]}; seeds missing in {arms[2]} (1 of 2)"
    ]
    assert "incomplete" in sc.labels()
    complete = scale_of(headlines([Source("reference", "y", df, b.extras, b.studies)], "dropout"), "dropout")
    assert complete.progress == []


def test_the_reference_arm_stands_beside_the_literature(runs, tmp_path, monkeypatch):
    arm = studies.get("dropout").arms("full")[0].name
    folder = tmp_path / "studies"
    shutil.copytree(ROOT / "studies", folder)
    path = folder / "dropout.toml"
    path.write_text(
        path.read_text() + f'\n[[literature]]\nprofile = "full"\narm = "{arm}"\nmetric = "test_acc"\nvalue = 0.6\n'
        'source = "a published figure (for this test)"\n'
        + f'\n[[literature]]\nprofile = "smoke"\narm = "{arm}"\nmetric = "test_error"\nvalue = 0.4\nsource = "its error"\n'
    )
    monkeypatch.setenv("BENCH_STUDIES_DIR", str(folder))  # the study files are read once per folder
    sc = scale_of(headlines([Source("your runs", "x", runs)], "dropout"), "dropout")
    finals = runs[(runs["study"] == "dropout") & (runs["stage"] == "final") & (runs["arm"] == arm)]
    here = sum(final_acc("test")(r) for _, r in finals.iterrows()) / len(finals) * 100
    assert sc.literature == [
        f"{arm} test_acc: {fmt(here)}% here (smoke, 2 seeds); a published figure (for this test): 60% (at the full profile's scale)",
        f"{arm} test_error: {fmt(100 - here)}% here (smoke, 2 seeds); its error: 40%",  # the same profile: no scale note
    ]


def welch_diff(d: float, sd: float, n: int, two: bool = True) -> Diff:
    """The Diff an experiment with n seeds per arm and this mean difference and SD would report."""
    se = sd * math.sqrt(2 / n if two else 1 / n)
    df = 2 * n - 2 if two else n - 1
    half = sps.t.ppf(0.5 + LEVEL / 2, df) * se
    return Diff(d, d - half, d + half, d / se, float(2 * sps.t.sf(abs(d / se), df)), df, n, n if two else 0)


def test_seeds_to_detect_matches_the_textbook_power_of_a_t_test():
    assert seeds_to_detect(welch_diff(1.0, 1.0, 10)) == 17  # R: power.t.test(delta=1, sd=1, power=0.8) -> n = 16.7
    assert seeds_to_detect(welch_diff(0.5, 1.0, 10, two=False)) == 34  # one-sample: n = 33.4
    assert seeds_to_detect(welch_diff(1.0, 1.0, 10), alpha=0.05 / 3) > 17  # Holm's strictest step needs more
    assert seeds_to_detect(welch_diff(0.0, 0.01, 5), margin=0.02) == 4  # t(6) * 0.01 * sqrt(2/4) < 0.02 first at n = 4
    assert math.isinf(seeds_to_detect(welch_diff(0.03, 0.01, 5), margin=0.02))  # outside the margin: never equivalent
    assert math.isinf(seeds_to_detect(welch_diff(0.0, 1.0, 5)))
    assert math.isnan(seeds_to_detect(Diff(0.3, math.nan, math.nan, math.nan, math.nan, math.nan, 1, 1)))  # one seed


def test_a_part_within_noise_says_how_many_seeds_would_settle_it():
    noisy = Part("a beats b", "a − b", "Welch t-test", diff=welch_diff(0.5, 1.0, 3), n_min=3)
    clear = Part("c beats d", "c − d", "Welch t-test", diff=welch_diff(5.0, 0.5, 3), n_min=3)
    verdict, parts = decide([noisy, clear])
    assert parts[0].outcome == "within noise" and parts[0].seeds_needed == seeds_to_detect(noisy.diff, 0.05 / 2)
    assert needed_text(parts[0]) == f"about {int(parts[0].seeds_needed)} seeds per arm would settle it"
    assert math.isnan(parts[1].seeds_needed) and needed_text(parts[1]) == ""
    verdict, _ = decide([noisy])
    assert verdict.label == "inconclusive" and f"needs about {int(seeds_to_detect(noisy.diff))} seeds per arm" in verdict.reason


def test_a_diverged_run_counts_at_its_tasks_chance():
    transfer = pd.Series({"status": "diverged", "chance": 0.2, "config.epochs": 4, "history.val_acc": [0.2, 0.5]})
    old = pd.Series({"status": "diverged", "config.epochs": 4, "history.val_acc": [0.1, 0.5]})
    assert final_acc("test")(transfer) == 0.2 and final_acc("test")(old) == 0.1
    assert learning_area("val")(transfer) == pytest.approx((0.5 + 0.2 * 3) / 4)


def test_bad_paths_and_files_are_one_line_errors_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    not_a_bundle = tmp_path / "notes.json.gz"
    not_a_bundle.write_bytes(gzip.compress(b'{"hello": 1}'))
    cases = [
        (["report", "--out", "/proc/forbidden"], "--out (the report folder)"),
        (["export", "--out", "/proc/forbidden/x.json.gz"], "--out (the results bundle)"),
        (["export", "--out", "mine.json"], "ending in .json.gz"),
        (["report", "--results", str(tmp_path / "missing"), "--out", "o"], "no such bundle file or folder"),
        (["report", "--results", str(not_a_bundle), "--out", "o"], "not a results bundle"),
        (["export", "--out", "x.json.gz", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"], "no MLflow store at"),
        (["report", "--results", "mlflow", "--out", "o"], "no MLflow store at sqlite:///mlflow.db"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, err
    assert not (tmp_path / "mlflow.db").exists()  # a bad --out stops before the store is opened


def test_summary_md_gives_every_claim_its_verdict_and_copies_one_figure(runs, tmp_path):
    out = tmp_path / "out"
    _, heads = write_report(runs, out, study="lr-schedule", source="fixture")
    copied = write_summary(heads, out, tmp_path / "summary.md", "lr-classic")
    text = (tmp_path / "summary.md").read_text()
    assert copied == tmp_path / "lr-classic.png" and copied.stat().st_size > 5000
    row = next(line for line in text.splitlines() if line.startswith("| learning-rate |"))
    lr = next(s for s in heads if s.claim_id == "learning-rate")
    assert f"**{lr.verdict.label}**" in row and lr.scale.line() in row and "![one figure of the report](" in text
    assert all(s.verdict.label != NOT_MEASURED for s in heads)


def test_an_unreadable_mlflow_store_is_one_line_or_as_a_default_source_a_warning(bundle_path, tmp_path, monkeypatch, bench_cli):
    """A store asked for by --results that cannot be read is an error (exit 2); the default store beside the
    reference bundles is a one-line warning, and the report goes on with the bundles. No password is printed."""
    from report import load, sources

    from studyrun import free_port

    down = f"http://bench:s3cr@t@127.0.0.1:{free_port()}"  # nothing listens there
    status, out, err = bench_cli("report", "--results", "mlflow", "--tracking-uri", down, "--out", str(tmp_path / "out"))
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ") and "bench:***@127.0.0.1" in err
    assert "s3cr" not in out + err

    folder = tmp_path / "reference"
    folder.mkdir()
    shutil.copy(bundle_path, folder / "reference.json.gz")
    monkeypatch.setattr(sources, "REFERENCE", folder)
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"")

    def refused(*args, **kwargs):  # what MLflow raises when a server wants other credentials
        raise RuntimeError("API request to https://u:pw@mlflow.example/api/2.0/mlflow/runs/search failed: 401 Unauthorized\nbody")

    monkeypatch.setattr(load, "load_runs", refused)
    for uri in (down, f"sqlite:///{store}"):
        # resnet-depth: a study whose section draws in a fraction of a second (the warning is the same for any)
        status, out, err = bench_cli("report", "--study", "resnet-depth", "--tracking-uri", uri, "--out", str(tmp_path / "out"))
        assert status == 0 and "report written" in out
        warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1 and "the report goes on without it" in warnings[0] and "pw@" not in err and "s3cr" not in err
    with pytest.raises(sources.StoreUnusable, match=r"cannot read the MLflow store .*401 Unauthorized$"):
        sources.gather(["mlflow"], f"sqlite:///{store}", "resnet-depth")
