"""Cluster faults, for real: a worker dying on another host, PostgreSQL and the tracking server restarted mid-study.

The worker on a simulated second host is killed with SIGKILL; PostgreSQL is stopped and started under a running
study; the team's MLflow server (basic auth, credentials from a file) is restarted under one. Each time the study
completes with every (arm, seed) finished exactly once, nothing left RUNNING in Optuna or MLflow, and no
password anywhere it could leak.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.data.cache import cache_dir
from bench.study.scheduler import final_key

from conftest import needs_mlflow_server
from studyrun import (
    QUICK_EPOCHS,
    QUICK_STUDY,
    command_lines,
    complete_count,
    finished_trials,
    free_port,
    run_study,
    runs_of,
    start_study,
    stop_group,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.slow  # whole studies, subprocesses and servers

EXPECTED = Counter({(arm, seed): 1 for arm in ("p0.0", "p0.5") for seed in range(3)})


def slow_env(tmp_path, data_dir, **more) -> dict:
    studies = tmp_path / "studies"
    studies.mkdir(exist_ok=True)
    (studies / "slow.toml").write_text(QUICK_STUDY)
    return {**os.environ, "BENCH_STUDIES_DIR": str(studies), "BENCH_DATA_DIR": data_dir, **more}


def assert_each_trial_once(tmp_path, storage_url=None, uri=None):
    """Every (arm, seed) COMPLETE once in Optuna and FINISHED once in MLflow; nothing RUNNING or WAITING."""
    trials = finished_trials(tmp_path, storage_url)
    complete = Counter(final_key(t) for t in trials if t.state.name == "COMPLETE")
    assert complete == EXPECTED
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    _, runs = runs_of(tmp_path, "slow", uri)
    finals = [r for r in runs if r.data.tags.get("bench.stage") == "final"]
    finished = Counter((r.data.tags["bench.arm"], int(r.data.tags["bench.seed"])) for r in finals if r.info.status == "FINISHED")
    assert finished == EXPECTED
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return trials, runs


def test_worker_killed_on_another_host_is_failed_and_rerun_by_a_survivor(tmp_path, data_dir):
    env = slow_env(tmp_path, data_dir)
    far = start_study(tmp_path, "slow", "--grace-period", "4", env={**env, "BENCH_HOSTNAME": "node-b"})
    try:
        wait_until(
            lambda: [t for t in finished_trials(tmp_path) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs],
            180,
            "node-b to train a trial",
            every=0.05,
        )
    finally:
        far.send_signal(signal.SIGKILL)  # the machine is gone: no chance to mark anything
        far.communicate(timeout=60)
    held = [t for t in finished_trials(tmp_path) if t.state.name == "RUNNING"]
    assert held and all(t.user_attrs["host"] == "node-b" for t in held)
    survivor = run_study(tmp_path, "slow", "--grace-period", "4", env=env)  # this host: pid checks say nothing of node-b
    assert survivor.returncode == 0, survivor.stdout + survivor.stderr
    trials, runs = assert_each_trial_once(tmp_path)
    by_number = {t.number: t for t in trials}
    for t in held:  # failed with the reason, then its (arm, seed) ran again here
        failed = by_number[t.number]
        assert failed.state.name == "FAIL" and "worker node-b:" in failed.user_attrs["failure"]
        assert "sent no heartbeat" in failed.user_attrs["failure"]
    node_b = [r for r in runs if r.data.tags.get("bench.host") == "node-b"]
    dead_runs = [r for r in node_b if r.info.status == "FAILED"]
    assert dead_runs and all("sent no heartbeat" in r.data.tags["bench.failure"] for r in dead_runs)
    assert any(r.data.tags.get("bench.kind") == "study" for r in dead_runs)  # its study execution's run too
    assert "sent no heartbeat" in survivor.stdout


# ---------------------------------------------------------------------- a PostgreSQL server of the test's own
class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder on a free port, owned by the test (stopped and started at will)."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins or os.geteuid() != 0 or shutil.which("runuser") is None:
            pytest.skip("needs PostgreSQL's server binaries and root (runuser) to run a private server: .ci/run installs them")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no 'postgres' system user (installed with the postgresql package)")
        self.bin, self.port = Path(bins[-1]), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # not under pytest's 0700 tmp folder: postgres must enter it
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self._as_postgres(self.bin / "initdb", "-D", str(self.data), "-U", "bench", "-A", "trust", "--no-sync")
        self.start()
        self.url = f"postgresql://bench@127.0.0.1:{self.port}/bench_optuna"
        self._as_postgres(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", "bench_optuna")

    def _as_postgres(self, *cmd) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.root / "log", "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    yield server
    server.close()


def test_postgres_restarted_mid_study(tmp_path, data_dir, private_postgres):
    env = slow_env(tmp_path, data_dir)
    url = private_postgres.url
    proc = start_study(tmp_path, "slow", "--storage", url, env=env)
    try:
        wait_until(lambda: complete_count(tmp_path, url) >= 2, 180, "two finished trials")
        private_postgres.stop()  # every connection of the worker dies; the study is mid-trial or between trials
        time.sleep(5)
        private_postgres.start()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "retrying for up to" in err and "reachable again" in err  # the outage was met, and waited out
    assert "Traceback" not in err
    assert_each_trial_once(tmp_path, url)


# ---------------------------------------------------------------------- the team's tracking server
def auth_server(tmp_path, port: int, password: str) -> subprocess.Popen:
    """`mlflow server` with MLflow's basic-auth app on 127.0.0.1: the admin password in its config file
    (mode 0600), never on the command line."""
    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\nadmin_username = team\nadmin_password = {password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # as docs/stores-and-cluster.md sets it up: a verified password is remembered (without, each request pays a
        # password hash, about 0.4 s here); a restart forgets it
        "auth_cache_ttl_seconds = 300\n"
    )
    config.chmod(0o600)
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "art")]
    cmd += ["--workers", "1"]
    # the app's CSRF key, the same across restarts (a file or the environment in a real deployment)
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": f"key-{password}"}
    log = open(tmp_path / "server.log", "a")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    wait_for_port(port, alive=proc)
    return proc


def refused_without_credentials(tmp_path, uri: str, capsys, monkeypatch, data_dir: str) -> str:
    """`bench study` against the server with no user and password: one line, exit 2, before any work."""
    from bench.cli import main

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials either
    monkeypatch.setenv("BENCH_DATA_DIR", data_dir)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    rc = main(["study", str(tmp_path / "studies" / "slow.toml"), "--profile", "smoke", "--no-progress", "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "asks for a user and password" in err and "MLFLOW_TRACKING_USERNAME" in err
    return err


@needs_mlflow_server
def test_tracking_server_with_basic_auth_restarted_mid_study(tmp_path, data_dir, capsys, monkeypatch):
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (the dev and cluster extras)")
    password = f"pw-{os.getpid()}-{time.time_ns() % 10**9}"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    home = tmp_path / "home"
    (home / ".mlflow").mkdir(parents=True)
    credentials = home / ".mlflow" / "credentials"
    credentials.write_text(f"[mlflow]\nmlflow_tracking_username = team\nmlflow_tracking_password = {password}\n")
    credentials.chmod(0o600)
    env = slow_env(tmp_path, data_dir, BENCH_CACHE_DIR=str(cache_dir()))
    server = auth_server(tmp_path, port, password)
    try:
        refused = refused_without_credentials(tmp_path, uri, capsys, monkeypatch, data_dir)
        # MLflow's HTTP client gives up after 2 quick tries here (it makes 7 over about 4 minutes by default), so the
        # outage reaches bench's own retry loop, and the test does not wait out a long backoff after the restart.
        quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
        proc = start_study(tmp_path, "slow", "--tracking-uri", uri, env={**env, "HOME": str(home), **quick}, progress=True)
        try:
            wait_until(lambda: complete_count(tmp_path) >= 2, 180, "two finished trials")
            assert password not in command_lines()  # not on any command line `ps` shows
            stop_group(server)
            time.sleep(2)
            server = auth_server(tmp_path, port, password)
            out, err = proc.communicate(timeout=400)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out + err
        assert "retrying for up to" in err and "reachable again" in err  # the outage was met, and waited out
        assert "\r" not in out + err and out.count("] final ") == 6  # not a terminal: one plain line per trial
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "team", password
        try:
            trials, runs = assert_each_trial_once(tmp_path, uri=uri)
            client = MlflowClient(uri)
            epochs = QUICK_EPOCHS
            for r in runs:
                assert password not in str(r.data.params) + str(r.data.tags)
                if r.data.tags.get("bench.stage") and r.info.status == "FINISHED":  # never half-logged and FINISHED
                    history = client.get_metric_history(r.info.run_id, "val_acc")
                    assert sorted(m.step for m in history) == list(range(epochs + 1))
                    # read where the server keeps it (--artifacts-destination): no download through the server per run
                    record = tmp_path / "art" / r.info.experiment_id / r.info.run_id / "artifacts" / "record.json"
                    assert password not in record.read_text()
        finally:
            del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
        assert password not in out + err + refused
    finally:
        stop_group(server)
    assert password not in (tmp_path / "server.log").read_text()
