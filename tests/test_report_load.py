"""Loading runs from MLflow and logging the report, on a temporary store filled with fixture
records (no training, no data needed): flattening, stage/status filtering, de-duplication,
and `build_report` writing the folder and logging it as a run of "bench/report"."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.study.bundles import read_bundle
from report.build import build_report
from report.frame import read_runs
from report.load import flatten, load_extras, load_runs, run_url

FIXTURE = Path(__file__).parent / "fixtures" / "runs.json.gz"
META = {
    "run_id",
    "experiment_id",
    "run_name",
    "url",
    "start_time",
    "study",
    "arm",
    "seed",
    "stage",
    "profile",
    "claims",
    "tuned_lr",
    "tune_lr",
}


def record_of(row) -> dict:
    """The trial record a fixture row was flattened from."""
    return {
        k: v
        for k, v in row.items()
        if k not in META and not k.startswith("factor.") and not (isinstance(v, float) and math.isnan(v))
    }


def tags_of(row) -> dict[str, str]:
    tags = {
        "bench.study": row["study"],
        "bench.arm": row["arm"],
        "bench.seed": str(row["seed"]),
        "bench.stage": row["stage"],
        "bench.profile": row["profile"],
        "bench.claims": row["claims"],
    }
    tags.update({f"bench.factor.{k[7:]}": v for k, v in row.items() if k.startswith("factor.") and isinstance(v, str)})
    if isinstance(row.get("tuned_lr"), float) and not math.isnan(row["tuned_lr"]):
        tags["bench.tuned_lr"] = str(row["tuned_lr"])
    return tags


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite MLflow store with the fixture's dropout runs logged as `bench study` logs them."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    rows = read_runs(FIXTURE)
    rows = rows[rows["study"] == "dropout"]
    exp = client.create_experiment("bench/dropout", artifact_location=str(root / "artifacts"))
    parent = client.create_run(exp, tags={"bench.kind": "study", "bench.study": "dropout"}).info.run_id
    ids = []
    for _, row in rows.iterrows():
        run = client.create_run(exp, run_name=row["run_name"], tags={**tags_of(row), "mlflow.parentRunId": parent})
        client.log_dict(run.info.run_id, record_of(row), "record.json")
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    first = rows.iloc[0]  # the same arm and seed again, later: the newer final run wins
    again = client.create_run(exp, tags=tags_of(first))
    client.log_dict(again.info.run_id, {**record_of(first), "test_acc": 0.987}, "record.json")
    client.set_terminated(again.info.run_id, "FINISHED")
    crashed = client.create_run(exp, tags=tags_of(first))  # failed: no record
    client.set_terminated(crashed.info.run_id, "FAILED")
    client.create_run(exp, tags=tags_of(first))  # still running: not read
    client.set_terminated(parent, "FINISHED")
    return uri, root, rows, again.info.run_id, exp


def test_load_runs_reads_every_finished_trial_once(store):
    uri, _, rows, newest, exp = store
    df = load_runs(uri, "dropout")
    assert len(df) == len(rows) and set(df["stage"]) == {"final"}
    first = rows.iloc[0]
    dup = df[(df["arm"] == first["arm"]) & (df["seed"] == first["seed"])]
    assert list(dup["run_id"]) == [newest] and dup["test_acc"].iloc[0] == 0.987
    assert set(df["factor.dropout"]) == set(rows["factor.dropout"])
    assert (df["url"] == [run_url(exp, r) for r in df["run_id"]]).all()
    assert load_runs(uri, "init").empty


def test_runs_whose_record_cannot_be_read_are_counted_in_a_warning(store, capsys):
    uri, root, rows, _, _ = store
    assert load_runs(uri, "dropout").shape[0] == len(rows) and "warning" not in capsys.readouterr().err
    hidden = root.parent / f"{root.name}-moved"
    (root / "artifacts").rename(hidden)  # the store copied without its artifact folder
    try:
        assert load_runs(uri, "dropout").empty
    finally:
        hidden.rename(root / "artifacts")
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {len(rows) + 1} of {len(rows) + 1} finished trial runs have no readable record.json")
    assert str(root / "artifacts") in err and err.count("\n") == 1


def test_flatten_maps_tags_to_columns():
    row = flatten(
        {"status": "ok", "test_acc": 0.5, "history.val_acc": [0.1, 0.4]},
        "abc",
        "7",
        {
            "bench.study": "optimizer",
            "bench.arm": "adam",
            "bench.seed": "1",
            "bench.stage": "final",
            "bench.profile": "quick",
            "bench.tuned_lr": "0.003",
            "bench.factor.optimizer": "adam",
        },
        123,
        "final adam",
    )
    assert row["factor.optimizer"] == "adam" and row["seed"] == 1 and row["tuned_lr"] == 0.003
    assert math.isnan(row["tune_lr"]) and row["url"].endswith("/#/experiments/7/runs/abc")
    assert row["history.val_acc"] == [0.1, 0.4]


def test_build_report_writes_the_folder_and_logs_it_to_mlflow(store):
    uri, root, *_ = store
    out = root / "out"
    index = build_report(uri, str(out), "dropout", results=["mlflow"])
    assert index == out / "index.html" and index.exists() and (out / "report.md").exists()
    html = index.read_text()
    assert 'id="claim-dropout"' in html and 'id="claim-zero-init"' not in html  # --study keeps its claims only
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("bench/report")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["verdict.dropout"] in html
    assert f"#/experiments/{exp.experiment_id}/runs/{run.info.run_id}" in html  # the page links its own MLflow run
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/index.html" in logged and "report/figures" in logged


def test_load_extras_keeps_the_newest_finished_readable_run_per_study_and_extra(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench/optimizer", artifact_location=str(tmp_path / "artifacts"))
    tags = {"bench.study": "optimizer", "bench.kind": "extra", "bench.extra": "trajectories"}

    def extra(steps: int | None, status: str, start: int) -> str:
        run = client.create_run(exp, start_time=start, tags=tags)
        if steps is not None:
            client.log_dict(run.info.run_id, {"steps": steps, "surfaces": {}}, "trajectories.json")
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    extra(50, "FINISHED", 1_000)  # older
    newest = extra(100, "FINISHED", 2_000)
    extra(200, "FAILED", 3_000)  # crashed while computing: not read
    extra(None, "FINISHED", 4_000)  # finished without its artifact: skipped, the older one stands in
    trial = client.create_run(exp, tags={"bench.study": "optimizer", "bench.stage": "final"})  # a trial, not an extra
    client.set_terminated(trial.info.run_id, "FINISHED")
    got = load_extras(uri)
    assert list(got) == ["optimizer"] and list(got["optimizer"]) == ["trajectories"]
    traj = got["optimizer"]["trajectories"]
    assert traj["steps"] == 100 and traj["run_id"] == newest and traj["url"] == run_url(exp, newest)
    assert load_extras(uri, "dropout") == {}


def test_bench_export_writes_the_stores_runs_and_the_report_reads_them_as_the_store(store, tmp_path, capsys):
    uri, _, rows, newest, _ = store
    path = tmp_path / "mine.json.gz"
    assert main(["export", "--out", str(path), "--tracking-uri", uri]) == 0
    assert f"exported {len(rows)} runs ({len(rows)} final) of 1 studies (dropout smoke)" in capsys.readouterr().out
    bundle = read_bundle(path)
    assert bundle.label == "mine" and newest in set(bundle.runs["run_id"]) and len(bundle.runs) == len(load_runs(uri))
    assert bundle.studies["dropout"]["definition"]["file"] == "dropout.toml"
    assert main(["export", "--out", str(path), "--study", "init", "--tracking-uri", uri]) == 2  # no runs of init here
    assert "no runs of init" in capsys.readouterr().err
    assert main(["export", "--out", str(path), "--profile", "full", "--tracking-uri", uri]) == 2
    assert "no finished runs to export" in capsys.readouterr().err
    md = {}
    for name, results in (("store", ["mlflow"]), ("bundle", [str(path)])):
        out = tmp_path / name
        assert main(["report", "--study", "dropout", "--tracking-uri", uri, "--out", str(out), "--results", *results]) == 0
        text = (out / "report.md").read_text()
        md[name] = text[text.index("## Summary") : text.index("**How to read")]
    assert md["store"] == md["bundle"] and "| [dropout](#claim-dropout) | **" in md["store"]
