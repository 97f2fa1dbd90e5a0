"""Every study smoke-runs end to end against real Optuna (journal file) and MLflow (SQLite)
stores; the runs are read back. Resume after SIGKILL and SIGINT: each (arm, seed) ends
finished exactly once and nothing is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from bench.study.files import get_study, list_studies
from bench.study.runner import tuned_param_key
from bench.study.scheduler import final_key

from studyrun import SLOW_STUDY, finished_trials, run_study, runs_of


@pytest.mark.parametrize("name", [s.name for s in list_studies()])
@pytest.mark.slow
def test_study_smoke_end_to_end(smoke_study, data_dir, name, bench_cli, monkeypatch):
    study = get_study(name)
    tmp_path, proc = smoke_study(name)  # run here, or by an earlier test that needed the finished study (it only read it)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == "profile: smoke (chosen with --profile)"
    client, runs = runs_of(tmp_path, name)
    children = [r for r in runs if r.data.tags.get("bench.stage")]
    parents = [r for r in runs if r.data.tags.get("bench.kind") == "study"]
    arms = {a.name for a in study.arms("smoke")}
    finals = [r for r in children if r.data.tags["bench.stage"] == "final"]
    tunes = [r for r in children if r.data.tags["bench.stage"] == "tune"]
    assert Counter((r.data.tags["bench.arm"], r.data.tags["bench.seed"]) for r in finals) == Counter({(a, "0"): 1 for a in arms})
    assert len(tunes) == len(arms) * study.tuning_trials("smoke")
    assert len(parents) == 1 and all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    for r in children:
        tags = r.data.tags
        assert r.info.status == "FINISHED"
        assert tags["bench.study"] == name and tags["bench.profile"] == "smoke"
        assert tags["bench.claims"] == ",".join(study.claims) and tags["bench.status"] in ("ok", "diverged")
        assert "JPEG" in tags["bench.data_source"]
        assert r.data.params["model"] and r.data.params["seed"] == tags["bench.seed"]
    if study.tuning is not None:  # final runs use their arm's best tuned value, logged on the parent
        parent_params = parents[0].data.params
        for r in finals:
            tuned = r.data.tags["bench.tuned_lr"]
            assert parent_params[tuned_param_key("lr", r.data.tags["bench.arm"])] == tuned == r.data.params["lr"]
    ok = next(r for r in finals if r.data.tags["bench.status"] == "ok")
    history = client.get_metric_history(ok.info.run_id, "val_acc")
    epochs = study.config("smoke", study.arms("smoke")[0], 0).epochs
    assert [m.step for m in history] == list(range(epochs + 1))  # epoch 0 = at initialisation
    assert 0.0 <= history[-1].value <= 1.0
    assert client.get_metric_history(ok.info.run_id, "A01.act_std")
    artifacts = [a.path for a in client.list_artifacts(ok.info.run_id)]
    assert "record.json" in artifacts
    extras = [r for r in runs if r.data.tags.get("bench.kind") == "extra"]
    assert sorted(r.data.tags["bench.extra"] for r in extras) == sorted(study.extras)
    for r in extras:
        assert r.info.status == "FINISHED" and f"{r.data.tags['bench.extra']}.json" in [
            a.path for a in client.list_artifacts(r.info.run_id)
        ]
    monkeypatch.chdir(tmp_path)  # finished: nothing reruns (asked in this process: the first run was a fresh one)
    status, out, err = bench_cli("study", name, "--profile", "smoke", "--no-progress", "--data-dir", data_dir)
    assert status == 0 and "is complete" in out, out + err
    assert len(runs_of(tmp_path, name)[1]) == len(runs)


@pytest.mark.parametrize("sig, expected_rc", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_interrupted_study_resumes_each_trial_exactly_once(tmp_path, data_dir, sig, expected_rc):
    studies = tmp_path / "studies"
    studies.mkdir()
    # 6 trials (2 arms x 3 seeds): the signal lands once 2 are done and a third is training, so some are always left
    (studies / "slow.toml").write_text(SLOW_STUDY)
    expected = {(arm, seed): 1 for arm in ("p0.0", "p0.5") for seed in range(3)}
    env = {**os.environ, "BENCH_STUDIES_DIR": str(studies), "BENCH_DATA_DIR": data_dir}
    # A background job of a non-interactive shell (as CI may run us) inherits SIGINT ignored;
    # give the study the default disposition a terminal's foreground process has.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "study", "slow", "--profile", "smoke", "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 180
    while time.time() < deadline and sum(t.state.name == "COMPLETE" for t in finished_trials(tmp_path)) < 2:
        time.sleep(0.2)
    while time.time() < deadline and not [
        t for t in finished_trials(tmp_path) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs
    ]:
        time.sleep(0.05)  # until a trial is training
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == expected_rc, err
    states = Counter(t.state.name for t in finished_trials(tmp_path))
    assert 2 <= states["COMPLETE"] < len(expected)
    if sig == signal.SIGINT:  # marked on the way out
        assert states["FAIL"] == 1 and states["RUNNING"] == 0
        _, runs = runs_of(tmp_path, "slow")
        killed = [r for r in runs if r.info.status == "KILLED" and r.data.tags.get("bench.stage")]
        assert len(killed) == 1 and killed[0].data.tags["bench.status"] == "interrupted"
    again = run_study(tmp_path, "slow", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = finished_trials(tmp_path)
    complete = Counter(final_key(t) for t in trials if t.state.name == "COMPLETE")
    assert complete == Counter(expected)
    assert not [t for t in trials if t.state.name == "RUNNING"]
    _, runs = runs_of(tmp_path, "slow")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = Counter(
        (r.data.tags["bench.arm"], r.data.tags["bench.seed"])
        for r in runs
        if r.info.status == "FINISHED" and r.data.tags.get("bench.stage") == "final"
    )
    assert finished == Counter({(arm, str(seed)): n for (arm, seed), n in expected.items()})
