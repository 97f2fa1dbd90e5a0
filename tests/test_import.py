"""`bench import`: the shipped reference bundle into empty stores (MLflow runs and Optuna trials, exactly once, the
same verdicts as the bundle), refusals of bundles measured otherwise, and --as-source."""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from bench.study import tracking as tags
from bench.study.bundles import read_bundle, write_bundle
from bench.study.files import get_study
from bench.study.importer import IDENTITY, ImportRefused, import_bundles, origin_of, record_of
from bench.study.scheduler import Scheduler
from bench.study.stores import open_storage
from report.figures import FigureMaker
from report.load import flatten
from report.sections import build_sections
from report.sources import from_bundle, from_mlflow

from conftest import ROOT

REFERENCE = ROOT / "results" / "reference" / "quick.json.gz"
STUDIES = ["optimizer", "localization"]  # tuning trials, extras, two tasks' records (classify, localize), several claims


def verdicts(source) -> list[tuple]:
    """Per claim: the verdict, its reason and every part's numbers (what the report says; of the links to the runs
    behind a part, their number: the imported runs are new runs with new ids)."""
    secs = build_sections(source.df, FigureMaker(None, ""), None, source.extras)
    return [(s.claim_id, s.verdict.label, s.verdict.reason, [repr(replace(p, runs=len(p.runs))) for p in s.parts]) for s in secs]


@pytest.fixture(scope="module")
def reference():
    """The reference bundle, read once for the module's tests (they only read it)."""
    return read_bundle(REFERENCE)


@pytest.fixture(scope="module")
def small_pca(tmp_path_factory, reference) -> Path:
    """The reference's pca study, seed 0 only: a bundle of a few runs for the tests that import one and then
    change it (a partial study imports as the runs it holds)."""
    b = copy.copy(reference)
    b.runs = reference.runs[(reference.runs["study"] == "pca") & (reference.runs["seed"] == 0)]
    b.studies = {"pca": reference.studies["pca"]}
    b.extras = {}
    return write_bundle(b, tmp_path_factory.mktemp("small") / "pca0.json.gz")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The reference's optimizer and localization studies imported into empty stores: (folder, tracking URI, counts)."""
    folder = tmp_path_factory.mktemp("imported")
    uri, storage = f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'optuna.db'}"
    counts = import_bundles([str(REFERENCE)], uri, storage, STUDIES, say=lambda _: None)
    return folder, uri, storage, counts


def test_every_run_lands_in_mlflow_marked_as_imported(imported, reference):
    _, uri, _, counts = imported
    bundle = reference
    client = MlflowClient(uri)
    for study in STUDIES:
        rows = bundle.runs[bundle.runs["study"] == study]
        exp = client.get_experiment_by_name(tags.experiment_name(study))
        runs = client.search_runs([exp.experiment_id], max_results=5000)
        trials = [r for r in runs if r.data.tags.get(tags.STAGE)]
        # a run keeps the id of the store that measured it, also when the bundle holds it imported from another
        assert sorted(r.data.tags[tags.ORIGIN_RUN_ID] for r in trials) == sorted(map(origin_of, rows.to_dict("records")))
        assert all(r.info.status == "FINISHED" and r.data.tags[tags.IMPORTED_FROM].startswith("quick.json.gz") for r in runs)
        parents = [r for r in runs if r.data.tags.get(tags.KIND) == "study"]
        assert len(parents) == 1 and all(r.data.tags[tags.PARENT] == parents[0].info.run_id for r in trials)
        one = next(r for r in trials if r.data.tags[tags.STAGE] == "final")
        row = {origin_of(r): r for r in rows.to_dict("records")}[one.data.tags[tags.ORIGIN_RUN_ID]]
        assert one.info.start_time == row["start_time"]  # the run keeps its own time
        assert float(one.data.params["epochs"]) == row["config.epochs"]
        steps = [m.step for m in client.get_metric_history(one.info.run_id, "val_acc")]
        assert steps == list(range(len(row["history.val_acc"])))  # per-epoch metrics at their epochs
        extras = [r for r in runs if r.data.tags.get(tags.KIND) == "extra"]
        assert len(extras) == len(bundle.extras.get(study, {}))
    assert sum(c.runs for c in counts) == sum(len(bundle.runs[bundle.runs["study"] == s]) for s in STUDIES) + 1  # + the extra


def test_optuna_holds_the_finished_trials_so_the_study_is_complete(imported):
    _, _, storage, _ = imported
    for name in STUDIES:
        study = get_study(name)
        scheduler = Scheduler(study, "quick", open_storage(storage), 60)
        try:
            done, total = scheduler.plan()
            assert done == total > 0
            for arm in scheduler.arms if study.tuning else []:
                trials = scheduler.tune_study(arm).get_trials(states=(TrialState.COMPLETE,))
                assert [t.number for t in trials] == list(range(study.tuning_trials("quick")))
                assert all(study.tuning.low <= t.params["lr"] <= study.tuning.high for t in trials)
                ok = [t for t in trials if t.user_attrs["status"] == "ok"]  # a diverged run has no accuracies to report
                assert all(len(t.intermediate_values) == study.config("quick", arm, 0).epochs for t in ok)
                assert scheduler.tuned_value(arm) is not None
        finally:
            scheduler.close()


def test_bench_study_then_has_nothing_to_run_and_a_second_import_adds_nothing(imported, reference, bench_cli, monkeypatch):
    folder, uri, storage, _ = imported
    bundle = reference
    n = int((bundle.runs["study"] == "optimizer").sum())  # its tuning and final trials
    monkeypatch.chdir(folder)
    code, out, err = bench_cli("study", "optimizer", "--profile", "quick", "--tracking-uri", uri, "--storage", storage)
    assert code == 0 and f"is complete: {n}/{n} trials finished; nothing to run" in out, err
    code, out, err = bench_cli("import", str(REFERENCE), "--study", *STUDIES, "--tracking-uri", uri, "--storage", storage)
    assert code == 0 and "imported 0 runs and 0 Optuna trials of 2 studies" in out, out + err


def test_the_report_from_the_imported_store_gives_the_bundles_verdicts(imported):
    _, uri, _, _ = imported
    here = from_mlflow(uri)
    there = from_bundle(REFERENCE)
    there.df = there.df[there.df["study"].isin(STUDIES)]
    assert set(here.df["origin_run_id"]) == set(there.df["origin_run_id"])
    mine, theirs = verdicts(here), verdicts(there)
    assert [v for v in mine if v[1] != "not measured"], "the comparison compares measured claims"
    assert mine == theirs


def test_a_records_identity_columns_are_what_the_loader_adds(reference):
    """record_of inverts report/load.py's flatten: importing writes each record as it was measured."""
    bundle = reference
    for row in bundle.runs.sample(20, random_state=0).to_dict("records"):
        row = {k: v for k, v in row.items() if v == v}  # NaN: a value the row does not have
        tagged = {"bench.study": row["study"], "bench.arm": row["arm"], "bench.seed": str(row["seed"])}
        tagged |= {"bench.stage": row["stage"], "bench.profile": row["profile"], "bench.claims": row["claims"]}
        tagged |= {f"bench.factor.{k[7:]}": v for k, v in row.items() if k.startswith("factor.")}
        back = flatten(record_of(row), row["run_id"], row["experiment_id"], tagged, row["start_time"], row["run_name"])
        added = set(back) - set(record_of(row))
        assert added <= IDENTITY | {k for k in back if k.startswith("factor.")} | {"git_commit"}, added - IDENTITY
        assert {k: back[k] for k in record_of(row)} == record_of(row)


def changed_bundle(tmp_path: Path, change, source: Path = REFERENCE) -> Path:
    """The bundle at `source` (the reference) with `change(doc)` applied, written as a new file."""
    doc = json.load(gzip.open(source))
    change(doc)
    path = tmp_path / "changed.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(doc, f)
    return path


def test_a_bundle_of_another_definition_is_refused_before_anything_is_written(tmp_path, bench_cli):
    def longer(doc):
        doc["studies"]["init"]["definition"]["arms"]["he+relu+d30"]["epochs"] = 99

    path, uri = changed_bundle(tmp_path, longer), f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ImportRefused, match=r"init \(quick\): measured with another definition.*epochs 99 there, 6 here"):
        import_bundles([str(path)], uri, f"sqlite:///{tmp_path / 'optuna.db'}", say=lambda _: None)
    assert not (tmp_path / "mlflow.db").exists()
    code, out, err = bench_cli("import", str(path), "--tracking-uri", uri, "--storage", f"sqlite:///{tmp_path / 'o.db'}")
    assert code == 2 and "nothing was written" in err and "--as-source" in err and len(err.strip().splitlines()) == 1


def test_a_bundle_measured_on_other_data_than_the_stores_runs_is_refused(tmp_path, small_pca):
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    import_bundles([str(small_pca)], uri, storage, ["pca"], say=lambda _: None)

    def other_data(doc):
        for run in doc["runs"]:
            run["data_digest"], run["data_source"] = "0123456789abcdef", "CIFAR-10"

    with pytest.raises(ImportRefused, match=r"pca \(quick\): measured on CIFAR-10 \(data 0123456789abcdef\)"):
        import_bundles([str(changed_bundle(tmp_path, other_data, small_pca))], uri, storage, ["pca"], say=lambda _: None)


def test_as_source_keeps_the_bundle_for_the_report_and_writes_no_store(tmp_path, small_pca, bench_cli, monkeypatch):
    import bench.study.importer as importer

    kept = tmp_path / "sources"
    monkeypatch.setattr(importer, "SOURCES", kept)
    monkeypatch.chdir(tmp_path)
    path = Path(shutil.copyfile(small_pca, tmp_path / "mine.json.gz"))
    code, out, _ = bench_cli("import", str(path), "--as-source")
    assert code == 0 and (kept / "mine.json.gz").is_file() and "kept as a report source" in out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna").exists()


def test_an_interrupted_import_is_completed_by_the_next(tmp_path, small_pca):
    """A kill between the MLflow run and its Optuna trial: the next import adds the trial, not a second run."""
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    import_bundles([str(small_pca)], uri, storage, ["pca"], say=lambda _: None)
    final = optuna.load_study(study_name="pca/quick/final", storage=storage)
    lost = final.get_trials()[0]
    optuna.delete_study(study_name="pca/quick/final", storage=storage)
    kept = optuna.create_study(study_name="pca/quick/final", storage=storage, direction="maximize")
    for t in final.get_trials()[1:]:
        kept.add_trial(t)
    counts = import_bundles([str(small_pca)], uri, storage, ["pca"], say=lambda _: None)
    assert (counts[0].runs, counts[0].trials) == (0, 1)
    again = optuna.load_study(study_name="pca/quick/final", storage=storage).get_trials()
    assert sorted(t.user_attrs["imported_run_id"] for t in again) == sorted(
        t.user_attrs["imported_run_id"] for t in final.get_trials()
    )
    assert lost.user_attrs["mlflow_run_id"] in {t.user_attrs["mlflow_run_id"] for t in again}
