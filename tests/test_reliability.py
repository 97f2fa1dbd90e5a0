"""Fault injection and scale-out: several workers, out-of-memory retry, unreachable stores,
and a cluster-style run (PostgreSQL for Optuna, an `mlflow server` on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest
import torch

from bench.study import executor, runner
from bench.study.files import load_study
from bench.study.scheduler import final_key

from conftest import needs_mlflow_server
from studyrun import (
    SLOW_STUDY,
    command_lines,
    complete_count,
    finished_trials,
    free_port,
    run_study,
    runs_of,
    stop_group,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.slow  # whole studies, subprocesses or servers

EXPECTED = Counter({(arm, seed): 1 for arm in ("p0.0", "p0.5") for seed in range(3)})


def slow_env(tmp_path, data_dir) -> dict:
    studies = tmp_path / "studies"
    studies.mkdir(exist_ok=True)
    (studies / "slow.toml").write_text(SLOW_STUDY)
    return {**os.environ, "BENCH_STUDIES_DIR": str(studies), "BENCH_DATA_DIR": data_dir}


def both_outputs(outs: list[tuple[str, str]]) -> str:
    """Every worker's whole stdout and stderr, for a failed assertion (a repr of the list is cut short)."""
    return "\n".join(f"--- worker {i}:\n{out}{err}" for i, (out, err) in enumerate(outs))


def assert_each_trial_once(tmp_path, storage_url=None, uri=None):
    trials = finished_trials(tmp_path, storage_url)
    complete = Counter(final_key(t) for t in trials if t.state.name == "COMPLETE")
    assert complete == EXPECTED
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    _, runs = runs_of(tmp_path, "slow", uri)
    finals = [r for r in runs if r.data.tags.get("bench.stage") == "final"]
    assert (
        Counter((r.data.tags["bench.arm"], int(r.data.tags["bench.seed"])) for r in finals if r.info.status == "FINISHED")
        == EXPECTED
    )
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return trials, runs


def test_workers_flag_shares_trials_exactly_once(tmp_path, data_dir):
    env = slow_env(tmp_path, data_dir)
    del env["BENCH_STUDIES_DIR"]  # the study file by its path: the second worker must find the same file
    proc = run_study(tmp_path, "studies/slow.toml", "--workers", "2", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials, runs = assert_each_trial_once(tmp_path)
    pids = {t.user_attrs["pid"] for t in trials if t.state.name == "COMPLETE"}
    assert len(pids) == 2  # both processes trained
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs if r.data.tags.get("bench.stage")}
    assert len(parents) == 1  # one study execution, one parent run


def test_two_processes_started_by_hand_share_the_study(tmp_path, data_dir):
    env = slow_env(tmp_path, data_dir)
    cmd = [sys.executable, "-m", "bench", "study", "slow", "--profile", "smoke", "--no-progress", "--threads", "1"]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], both_outputs(outs)
    trials, _ = assert_each_trial_once(tmp_path)
    assert len({t.user_attrs["pid"] for t in trials if t.state.name == "COMPLETE"}) == 2


@pytest.mark.parametrize("allowed", [True, False])
def test_out_of_memory_fails_the_run_and_retries_at_half_batch(tmp_path, data_dir, monkeypatch, allowed):
    text = SLOW_STUDY.replace('name = "slow"', f'name = "slow"\noom_retry = {str(allowed).lower()}').replace(
        "seeds = 3", "seeds = 1"
    )
    path = tmp_path / "slow.toml"
    path.write_text(text)
    real = executor.train_packed

    def fake_device(cfgs, *args, **kwargs):  # a device that fits batches of at most 64 images
        if any(cfg.batch_size > 64 for cfg in cfgs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(executor, "train_packed", fake_device)
    monkeypatch.chdir(tmp_path)
    run = runner.StudyRun(load_study(path), "smoke", None, f"sqlite:///{tmp_path / 'mlflow.db'}", data_dir, progress=False)
    rc = run.run()
    _, runs = runs_of(tmp_path, "slow")
    children = [r for r in runs if r.data.tags.get("bench.stage")]
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(failed) == 2 and all("OutOfMemoryError" in r.data.tags["bench.failure"] for r in failed)
    states = Counter(t.state.name for t in finished_trials(tmp_path))
    if allowed:
        assert rc == 0 and states == Counter({"COMPLETE": 2})
        retried = [r for r in children if r.info.status == "FINISHED"]
        assert len(retried) == 2 and all(r.data.params["batch_size"] == "64" for r in retried)
        assert all("halved to 64" in r.data.tags["bench.oom_retry"] for r in retried)
    else:
        assert rc == 1 and states == Counter({"FAIL": 2}) and len(children) == 2


def test_out_of_memory_ladder_pack_then_alone_then_half_batch(tmp_path, data_dir, monkeypatch):
    """A pack that runs out of memory retries its trials alone; alone, each retries once at half the batch."""
    path = tmp_path / "slow.toml"
    one_arm = '[profiles.smoke]\nseeds = 2\narms = { dropout = ["p0.0"] }'  # two seeds of one architecture
    path.write_text(SLOW_STUDY.replace("[profiles.smoke]\nseeds = 3", one_arm).replace("epochs = 3", "epochs = 1"))
    real, calls = executor.train_packed, []

    def fake_device(cfgs, *args, **kwargs):  # a device that fits one trial at a time, of batches of at most 64
        calls.append((len(cfgs), cfgs[0].batch_size))
        if len(cfgs) > 1 or cfgs[0].batch_size > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(executor, "train_packed", fake_device)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runner.StudyRun(load_study(path), "smoke", None, uri, data_dir, progress=False, pack=2).run() == 0
    assert calls == [(2, 128), (1, 128), (1, 64), (1, 128), (1, 64)]
    _, runs = runs_of(tmp_path, "slow")
    failed = sorted(r.data.tags["bench.failure"].split(":")[0] for r in runs if r.info.status == "FAILED")
    assert failed == ["OutOfMemoryError", "OutOfMemoryError", "packed x2", "packed x2"]
    finished = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("bench.stage")]
    assert sorted(r.data.tags["bench.seed"] for r in finished) == ["0", "1"]
    assert all(r.data.params["batch_size"] == "64" for r in finished)
    assert Counter(t.state.name for t in finished_trials(tmp_path)) == Counter({"COMPLETE": 2})


def test_unreachable_stores_fail_before_training(tmp_path, data_dir):
    env = slow_env(tmp_path, data_dir)
    for extra, expected in [
        (["--tracking-uri", "http://127.0.0.1:9"], "cannot reach the MLflow tracking server"),
        (["--storage", "postgresql://bench:hunter2@127.0.0.1:9/nodb"], "cannot open Optuna storage"),
    ]:
        proc = run_study(tmp_path, "slow", *extra, env=env, timeout=120)
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert "hunter2" not in proc.stdout + proc.stderr
    assert not (tmp_path / "mlflow.db").exists() or not runs_of(tmp_path, "slow")[1]


# ---------------------------------------------------------------------- cluster
POSTGRES = os.environ.get("BENCH_TEST_POSTGRES")  # e.g. postgresql://bench:pw@127.0.0.1:5432/postgres (set by .ci/run)


@pytest.fixture
def postgres_dbs():
    if not POSTGRES:
        pytest.skip("no PostgreSQL: set BENCH_TEST_POSTGRES (.ci/run installs and starts one on 127.0.0.1)")
    import psycopg

    names = [f"bench_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("optuna", "mlflow")]
    admin = psycopg.connect(POSTGRES, autocommit=True)
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE {name}")
    base = POSTGRES.rsplit("/", 1)[0]
    yield [f"{base}/{name}" for name in names]
    with admin.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@needs_mlflow_server
def test_cluster_postgres_storage_and_mlflow_server_two_workers(tmp_path, data_dir, postgres_dbs):
    """Two workers on PostgreSQL + `mlflow server`, with the password where `ps` cannot see it: the workers
    get the storage URL in BENCH_STORAGE, the server gets PGPASSWORD; it shows in no command line."""
    optuna_url, mlflow_db = postgres_dbs
    password = optuna_url.split(":")[2].split("@")[0]
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += [
        "--backend-store-uri",
        mlflow_db.replace(f":{password}@", "@"),
        "--default-artifact-root",
        str(tmp_path / "artifacts"),
    ]
    server = subprocess.Popen(
        cmd,
        env={**os.environ, "PGPASSWORD": password},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, alive=server)
        env = {**slow_env(tmp_path, data_dir), "BENCH_STORAGE": optuna_url}
        cmd = [sys.executable, "-m", "bench", "study", "slow", "--profile", "smoke", "--no-progress", "--threads", "1"]
        cmd += ["--tracking-uri", uri]
        procs = [
            subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        wait_until(lambda: complete_count(tmp_path, optuna_url) >= 1, 300, "a finished trial")
        assert password not in command_lines()  # not on any command line `ps` shows
        outs = [p.communicate(timeout=400) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], both_outputs(outs)
        trials, runs = assert_each_trial_once(tmp_path, optuna_url, uri)
        assert len({t.user_attrs["pid"] for t in trials if t.state.name == "COMPLETE"}) == 2
        for r in runs:  # the storage password is never logged or printed
            assert password not in str(r.data.params) + str(r.data.tags)
        assert all(password not in out + err for out, err in outs)
    finally:
        stop_group(server)
