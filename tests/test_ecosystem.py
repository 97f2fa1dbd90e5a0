"""What the tools people already use see of a study: Optuna's learning curves and metric name (optuna-dashboard),
MLflow's dataset inputs, git source tags and, with --system-metrics, system metrics, on real stores."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from bench.cli import main
from bench.study import runner
from bench.study.files import load_study
from bench.study.scheduler import METRIC_NAME

from studyrun import runs_of

STUDY = """
name = "eco"
claims = ["learning-rate"]
[base]
model = "mlp"
depth = 2
width = 256
batchnorm = false
n_train = 3000
n_val = 200
n_test = 100
epochs = 3
eval_train_size = 100
probe_size = 32
[factors.opt]
sgd = { optimizer = "sgd" }
[tuning]
param = "lr"
low = 0.001
high = 0.5
log = true
trials = 2
[profiles.smoke]
seeds = 1
[profiles.quick]
seeds = 2
[profiles.full]
seeds = 3
"""


def run_eco(tmp_path, data_dir, monkeypatch, **options):
    (tmp_path / "studies").mkdir(parents=True)
    path = tmp_path / "studies" / "eco.toml"
    path.write_text(STUDY)
    monkeypatch.setenv("BENCH_STUDIES_DIR", str(tmp_path / "studies"))  # where bench import finds the study
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert runner.StudyRun(load_study(path), "smoke", storage, uri, data_dir, progress=False, **options).run() == 0
    client, runs = runs_of(tmp_path, "eco")
    return client, [r for r in runs if r.data.tags.get("bench.stage")], storage


def trials_of(storage: str) -> list:
    return [t for s in optuna.get_all_study_names(storage) for t in optuna.load_study(study_name=s, storage=storage).trials]


@pytest.mark.slow
def test_trials_carry_learning_curves_datasets_git_source_and_system_metrics(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")  # several samples within a trial of ~1 s
    client, children, storage = run_eco(tmp_path, data_dir, monkeypatch, system_metrics=True)
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)  # 2 tuning, 1 final
    by_id = {r.info.run_id: r for r in children}

    # Optuna: every study names its metric; every trial's intermediate values are its run's val_acc per epoch
    for name in optuna.get_all_study_names(storage):
        assert optuna.load_study(study_name=name, storage=storage).metric_names == [METRIC_NAME]
    trials = trials_of(storage)
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
        assert sorted(t.intermediate_values) == [1, 2, 3]
        assert t.intermediate_values == pytest.approx({e: history[e] for e in (1, 2, 3)})
        assert t.value == pytest.approx(max(history.values()))  # best_val_acc, its metric name

    for run in children:
        record = json.loads(open(client.download_artifacts(run.info.run_id, "record.json", str(tmp_path))).read())
        # MLflow datasets: one input per split, its size in the profile, the context tag MLflow's UI shows
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["test", "train", "validation"]
        sizes = {ctx: json.loads(d.profile)["num_rows"] for ctx, d in inputs.items()}
        assert sizes == {"train": record["n_train_used"], "validation": 200, "test": 100}
        assert all(d.name == f"CIFAR-10 {ctx}" and record["data_digest"] in d.source for ctx, d in inputs.items())
        assert len({d.digest for d in inputs.values()}) == 3
        # git source: MLflow's own tag, the record's commit
        assert run.data.tags["mlflow.source.git.commit"] == record["git_commit"] == run.data.tags["bench.git_commit"]
        assert run.data.tags["mlflow.source.name"] == "bench study eco"
        # system metrics, logged while it trained
        system = {k for k in run.data.metrics if k.startswith("system/")}
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system


@pytest.mark.slow
def test_without_the_flag_no_system_metrics_and_imported_trials_have_the_same_curves(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    client, children, storage = run_eco(tmp_path / "here", data_dir, monkeypatch)
    assert children and not any(k.startswith("system/") for r in children for k in r.data.metrics)
    here = {t.user_attrs["mlflow_run_id"]: t.intermediate_values for t in trials_of(storage)}
    bundle = str(tmp_path / "eco.json.gz")
    assert main(["export", "--out", bundle, "--tracking-uri", f"sqlite:///{tmp_path / 'here' / 'mlflow.db'}"]) == 0
    there = tmp_path / "there"
    there.mkdir()
    monkeypatch.chdir(there)
    theirs = f"sqlite:///{there / 'optuna.db'}"
    assert main(["import", bundle, "--tracking-uri", f"sqlite:///{there / 'mlflow.db'}", "--storage", theirs]) == 0
    imported = {t.user_attrs["imported_run_id"]: t.intermediate_values for t in trials_of(theirs)}
    assert imported == here and all(sorted(v) == [1, 2, 3] for v in imported.values())
