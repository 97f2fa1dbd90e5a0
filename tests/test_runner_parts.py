"""The runner's parts on their own, with real Optuna and MLflow stores.

Liveness judgements, store retries and full-disk recognition, a dataset row another worker inserted first,
plain progress lines, --pack/--workers auto, a study file given by path, a new SQLite store that another process
is still migrating, and passwords kept out of what bench prints and the command lines it starts.
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.study import liveness, stores
from bench.study.files import StudyError, get_study
from bench.study.progress import Progress, trial_line
from bench.study.runner import StudyRun, concurrency
from bench.study.tracking import EXPERIMENT_KIND, TRAINING_KIND, Tracker, dataset_inputs, prepare_ui
from bench.study.uris import client_uri, health_url, redact, sqlite_path

from conftest import needs_mlflow_server
from studyrun import SLOW_STUDY


def running_trial(attrs: dict) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return study.get_trials(deepcopy=False)[0]


def test_stale_reason_local_pid_remote_heartbeat_and_own_trials():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    here = liveness.hostname()
    # this host, process gone: dead at once, whatever its heartbeat says
    assert "is gone" in liveness.stale_reason(running_trial({"host": here, "pid": dead.pid, "heartbeat": now}), 300)
    # another host: judged by its heartbeat against the grace period (or 3 of its own intervals, if longer)
    fresh = {"host": "node-b", "pid": 7, "heartbeat": now - 20, "heartbeat_interval": 2.0}
    assert liveness.stale_reason(running_trial(fresh), 30, now) is None
    assert "no heartbeat for 20 s (grace period 10 s)" in liveness.stale_reason(running_trial(fresh), 10, now)
    slow_writer = {**fresh, "heartbeat_interval": 10.0}
    assert liveness.stale_reason(running_trial(slow_writer), 10, now) is None  # 20 s < 3 x 10 s
    # no heartbeat at all (died right after claiming): counted from the trial's start
    assert liveness.stale_reason(running_trial({}), 300, now) is None
    assert "unknown worker" in liveness.stale_reason(running_trial({}), 300, now + 400)
    # this process's own trials, and a live process's on this host, are never judged by a stale stamp (an outage)
    own = {"host": here, "pid": os.getpid(), "worker_token": liveness.WORKER_TOKEN, "heartbeat": now - 1000}
    assert liveness.stale_reason(running_trial(own), 10, now) is None
    assert liveness.stale_reason(running_trial({"host": here, "pid": os.getppid(), "heartbeat": now - 1000}), 10, now) is None
    # this host and pid with another token: an earlier process (a restarted container), gone
    earlier = {**own, "worker_token": "0123456789abcdef@another-boot:1"}
    assert "an earlier process with this host name and process id" in liveness.stale_reason(running_trial(earlier), 10, now)


def test_heartbeat_thread_stamps_held_trials_only():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    held, other = study.ask(), study.ask()
    beat = liveness.Heartbeat(storage, interval=0.1)
    try:
        for key, value in beat.identity().items():  # what the scheduler writes on a trial it claims
            held.set_user_attr(key, value)
        beat.hold(held)
        first = storage.get_trial(held._trial_id).user_attrs["heartbeat"]
        time.sleep(0.5)
        assert storage.get_trial(held._trial_id).user_attrs["heartbeat"] > first
        assert "heartbeat" not in storage.get_trial(other._trial_id).user_attrs
        beat.release(held)
        study.tell(held, 1.0)
        time.sleep(0.3)  # a finished trial is no longer stamped (and the thread survives trying)
        assert beat.thread.is_alive()
    finally:
        beat.stop()


def test_full_disk_and_transient_errors_are_told_apart(tmp_path):
    full = OSError(errno.ENOSPC, "No space left on device")
    assert stores.disk_full(full) and not stores.transient(full)
    try:  # SQLite's own word for it, wrapped the way MLflow wraps store errors
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as exc:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full") from exc
    except RuntimeError as exc:
        assert stores.disk_full(exc) and not stores.transient(exc)
    for text in ("server closed the connection unexpectedly", "the database system is shutting down", "Max retries exceeded"):
        assert stores.transient(RuntimeError(text)) and not stores.disk_full(RuntimeError(text))
    assert stores.transient(ConnectionRefusedError(111, "Connection refused"))
    assert not stores.transient(sqlite3.OperationalError("no such table: runs"))  # a wrong request: not retried
    error = stores.disk_full_error(stores.Where("the MLflow store sqlite:///x.db (log_batch)", tmp_path))
    message = str(error)
    assert str(tmp_path) in message and "MB free" in message and f"free at least {stores.MIN_FREE_MB} MB" in message
    assert "\n" not in message


def test_retrying_waits_for_a_store_that_comes_back(capsys):
    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError("connection failed: Connection refused")
        return "ok"

    assert stores.retrying(flaky, stores.Where("the Optuna storage postgresql://u:***@h/db"), budget=10) == "ok"
    assert len(calls) == 3 and calls[2] - calls[1] >= 2 * (calls[1] - calls[0]) * 0.9  # backoff doubles
    err = capsys.readouterr().err
    assert err.count("retrying for up to 10 s") == 1 and "reachable again" in err
    with pytest.raises(ValueError):  # not a store that is away: raised at once
        stores.retrying(lambda: (_ for _ in ()).throw(ValueError("bad value")), stores.Where("x"), budget=10)
    start = time.monotonic()
    with pytest.raises(RuntimeError):  # the budget spent: the error goes up
        stores.retrying(lambda: (_ for _ in ()).throw(RuntimeError("Connection refused")), stores.Where("x"), budget=1.2)
    assert time.monotonic() - start < 3
    with pytest.raises(stores.DiskFullError):
        stores.retrying(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")), stores.Where("x"), budget=10)


def test_a_dataset_row_another_worker_inserted_first_is_linked_on_the_next_try(tmp_path, monkeypatch):
    """Two workers logging the same split at once: MLflow's check-then-insert loses on the dataset's key (the
    error a cluster run on PostgreSQL got through the tracking server); the trial's inputs still get linked."""
    with sqlite3.connect(tmp_path / "k.db") as con:  # SQLite's own words for a lost key
        con.execute("CREATE TABLE datasets (name TEXT, digest TEXT, PRIMARY KEY (name, digest))")
        con.execute("INSERT INTO datasets VALUES ('a', 'b')")
        with pytest.raises(sqlite3.IntegrityError) as sqlite_lost:
            con.execute("INSERT INTO datasets VALUES ('a', 'b')")
    lost = RestException(
        {
            "error_code": "BAD_REQUEST",
            "message": '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"',
        }
    )
    assert stores.duplicate_key(sqlite_lost.value) and stores.duplicate_key(lost) and not stores.transient(lost)
    assert not stores.duplicate_key(RuntimeError("no such table: datasets"))

    record = {"n_train_used": 500, "n_val_used": 200, "n_test_used": 100, "data_source": "x", "data_digest": "d"}
    inputs = dataset_inputs(record)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "race")
    first = tracker.start_run("first", {})
    tracker.log_inputs(first, inputs)  # the other worker's trial: the dataset rows exist now
    real, calls = tracker.client.log_inputs, []

    def loses_once(run_id, datasets):
        calls.append(run_id)
        if len(calls) == 1:
            raise lost
        return real(run_id, datasets)

    monkeypatch.setattr(tracker.client, "log_inputs", loses_once)
    second = tracker.start_run("second", {})
    tracker.log_inputs(second, inputs)
    assert calls == [second, second]
    client = MlflowClient(tracker.uri)
    linked = {r: {i.dataset.digest for i in client.get_run(r).inputs.dataset_inputs} for r in (first, second)}
    assert linked[first] == linked[second] == {d.dataset.digest for d in inputs} and len(linked[first]) == 3

    def refused(run_id, datasets):  # any other error is not a lost race: raised at once, not tried again
        calls.append(run_id)
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad dataset"})

    monkeypatch.setattr(tracker.client, "log_inputs", refused)
    calls.clear()
    with pytest.raises(RestException, match="bad dataset"):
        tracker.log_inputs(second, inputs)
    assert calls == [second]


def test_progress_without_a_terminal_prints_one_plain_line_per_trial():
    out, err = io.StringIO(), io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, out
    try:
        progress = Progress(total=3, done=1, label="slow", stream=err)
        progress.status("final p0.0 seed=1 epoch 1/3")
        progress.finished(2, trial_line("final", "p0.0", 1, {"status": "ok", "best_val_acc": 0.4123, "seconds": 2.34}))
        progress.finished(2, trial_line("final", "p0.5", 1, None, "OutOfMemoryError: CUDA out of memory"))
        progress.close()
        quiet = Progress(total=3, done=1, label="slow", enabled=False, stream=err)
        quiet.finished(3, "final p0.5 seed=2: ok")
    finally:
        sys.stdout = sys_stdout
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() + err.getvalue() and err.getvalue() == ""
    assert lines[0].startswith("[2/3] final p0.0 seed=1: ok, val_acc 0.412, 2.3 s (")
    assert lines[1].startswith("[2/3] final p0.5 seed=1: failed (OutOfMemoryError: CUDA out of memory)")


def test_pack_and_workers_auto_and_packable_false(tmp_path):
    path = tmp_path / "slow.toml"
    path.write_text(SLOW_STUDY)
    study = get_study(str(path))
    from bench.perf.concurrency import default_concurrency

    for device in ("cpu", "cuda"):
        want_pack, want_workers, why = default_concurrency("mlp", device)
        assert concurrency(study, "smoke", "auto", "auto", device) == (want_pack, want_workers, why)
    assert concurrency(study, "smoke", "3", "2", "cpu")[:2] == (3, 2)
    alone = get_study(str(_write(tmp_path, "alone", SLOW_STUDY.replace('name = "slow"', 'name = "alone"\npackable = false'))))
    pack, _, why = concurrency(alone, "smoke", "4", "1", "cuda")
    assert pack == 1 and "packable = false" in why
    for bad in ("0", "many", "-2"):
        with pytest.raises(StudyError, match="expected auto or an integer >= 1"):
            concurrency(study, "smoke", bad, "auto", "cpu")


def _write(folder, name, text):
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def test_study_file_by_path_is_validated_like_the_built_in_ones(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, "slow", SLOW_STUDY)
    monkeypatch.chdir(tmp_path)
    assert get_study("./slow.toml").name == "slow" and get_study(str(path)).path == str(path)
    with pytest.raises(StudyError, match="study file nope.toml does not exist"):
        get_study("nope.toml")
    broken = _write(
        tmp_path, "broken", SLOW_STUDY.replace('name = "slow"', 'name = "broken"').replace("epochs = 3", "epochs = 'x'")
    )
    assert main(["study", str(broken), "--profile", "smoke"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {broken}: field 'base': epochs expects int, got 'x'"]


def test_new_sqlite_store_being_migrated_by_another_process_is_waited_for(tmp_path, monkeypatch):
    """A reader (`mlflow ui`, a notebook) created the file and is migrating it: bench waits, never migrates
    alongside it (that is what crashed with alembic's "Online migration expected to match one row")."""
    import sqlalchemy
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _upgrade_db
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mlflow.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    InitialBase.metadata.create_all(engine)  # the other process's first step: old tables, migrations to come
    assert Base is not None
    finished = []

    def other_process_finishes_migrating():
        time.sleep(2.0)
        _upgrade_db(engine)
        engine.dispose()
        SqlAlchemyStore(f"sqlite:///{path}", "./mlruns")  # its default experiment
        finished.append(time.monotonic())

    other = threading.Thread(target=other_process_finishes_migrating)
    other.start()
    tracker = Tracker(f"sqlite:///{path}", "slow")
    returned = time.monotonic()
    other.join()
    assert finished and returned >= finished[0]  # waited for the other migration instead of running its own
    exp = MlflowClient(f"sqlite:///{path}").get_experiment(tracker.experiment_id)
    assert exp.name == "bench/slow" and exp.tags[EXPERIMENT_KIND] == TRAINING_KIND


def test_a_new_sqlite_store_is_a_copy_of_the_empty_one_mlflow_built_first(tmp_path, monkeypatch):
    """MLflow's migrations run once per MLflow version (the empty store is kept in the cache); every later new store
    is that copy with its Default experiment where MLflow would have put it, and works like one MLflow built."""
    from bench.study import sqlite_store

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    migrated, migrate = [], sqlite_store._migrate_sqlite_store
    monkeypatch.setattr(sqlite_store, "_migrate_sqlite_store", lambda path: migrated.append(path) or migrate(path))

    def new_store(name: str) -> MlflowClient:
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        Tracker(f"sqlite:///{tmp_path / name / 'mlflow.db'}", "s")
        return MlflowClient(f"sqlite:///{tmp_path / name / 'mlflow.db'}")

    def schema(name: str) -> list:  # each table's columns and constraints (MLflow's own migrations order them at random)
        with sqlite3.connect(tmp_path / name / "mlflow.db") as con:
            rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        return [(kind, what, sorted(ln.strip().rstrip(",") for ln in (sql or "").splitlines())) for kind, what, sql in rows]

    built = new_store("a")
    (template,) = (tmp_path / "cache" / "mlflow").glob("empty-*.db")
    before = time.time() * 1000
    copied = new_store("b")
    assert len(migrated) == 1 and schema("b") == schema("a")
    for name, client in (("a", built), ("b", copied)):
        default = client.get_experiment("0")
        assert default.name == "Default" and default.artifact_location == str(tmp_path / name / "mlruns" / "0")
        run = client.create_run(client.get_experiment_by_name("bench/s").experiment_id)
        client.log_metric(run.info.run_id, "m", 1.0)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert copied.get_experiment("0").creation_time >= before
    template.write_bytes(b"not a database")  # a damaged template: built again, and replaced
    assert new_store("c").get_experiment("0").name == "Default" and len(migrated) == 2
    assert schema("c") == schema("a") and sqlite_store._sqlite_ready(template)


def test_experiments_are_tagged_as_training_runs_when_made_and_when_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("bench/old", tags={"bench.study": "old"})  # made before the tag existed
    assert EXPERIMENT_KIND not in client.get_experiment(old).tags
    Tracker(uri, "old")
    new = Tracker(uri, "new").experiment_id
    for exp_id in (old, new):
        assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND] == TRAINING_KIND


def test_the_default_relative_store_is_the_working_directorys_after_a_chdir(tmp_path, monkeypatch):
    """sqlite:///mlflow.db (the default) is the mlflow.db of the working directory at each call, in one process:
    MLflow keeps a store per URI string, so a relative one would keep reaching the first folder's file."""
    from report.load import load_runs

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        Tracker("sqlite:///mlflow.db", f"study-{name}")
        assert load_runs("sqlite:///mlflow.db").empty
    names = {
        folder: {e.name for e in MlflowClient(f"sqlite:///{tmp_path / folder / 'mlflow.db'}").search_experiments()}
        for folder in ("a", "b")
    }
    assert names == {"a": {"Default", "bench/study-a"}, "b": {"Default", "bench/study-b"}}
    assert client_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    assert client_uri("sqlite:///~/x.db?mode=ro") == f"sqlite:///{os.path.expanduser('~/x.db')}?mode=ro"
    for uri in ("sqlite:////abs/m.db", "http://127.0.0.1:5000", "sqlite:///:memory:", "postgresql://u@h/db"):
        assert client_uri(uri) == uri
    assert sqlite_path("sqlite:///~/x.db?mode=ro") == Path("~/x.db").expanduser().resolve()
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("http://127.0.0.1:5000") is None


def test_bench_ui_tags_every_bench_experiment_and_no_other(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    ours, theirs = client.create_experiment("bench/old"), client.create_experiment("someone else's")
    assert prepare_ui(uri) == 1 and prepare_ui(uri) == 0
    assert client.get_experiment(ours).tags[EXPERIMENT_KIND] == TRAINING_KIND
    assert EXPERIMENT_KIND not in client.get_experiment(theirs).tags


def test_redact_hides_every_form_of_password():
    cases = {
        "postgresql://user:secret@db:5432/optuna": "postgresql://user:***@db:5432/optuna",
        "postgresql://user:p@ss@w0rd@db/optuna?sslmode=require": "postgresql://user:***@db/optuna?sslmode=require",
        "postgresql://db/optuna?user=u&password=s3cret&sslmode=require": "postgresql://db/optuna?user=u&password=***&sslmode=require",
        "https://u:pw@mlflow.example/x and http://v:pw2@h:5000": "https://u:***@mlflow.example/x and http://v:***@h:5000",
        "sqlite:///mlflow.db": "sqlite:///mlflow.db",
        "http://127.0.0.1:5000": "http://127.0.0.1:5000",
        "postgresql://user@db/optuna": "postgresql://user@db/optuna",
    }
    assert {url: redact(url) for url in cases} == cases
    assert health_url("http://u:p@ss@127.0.0.1:5000/") == "http://127.0.0.1:5000/health"


def test_bench_ui_without_full_mlflow_is_one_line_naming_the_extra(bench_cli, monkeypatch):
    """The core install has mlflow-skinny (a client, no web app): `bench ui` says which extra to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flask" else real(name, *a))
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("started mlflow ui without its web app"))
    status, out, err = bench_cli("ui")
    assert status == 2 and err.strip().splitlines() == [
        "error: bench ui needs full MLflow (its web app), the ui extra: pip install 'ablation-bench[ui]' (make install has it)"
    ]


@needs_mlflow_server
def test_bench_ui_keeps_the_store_password_off_its_output_and_command_line(bench_cli, monkeypatch):
    from mlflow.cli import server

    import bench.study.tracking as tracking

    uri = "postgresql://mlflow:s3cr@t@db:5432/mlflow?password=again"
    calls = []
    monkeypatch.setattr(tracking, "prepare_ui", lambda u: calls.append(("prepare", u)))
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: calls.append((cmd, env)) or 0)
    status, out, err = bench_cli("ui", "--tracking-uri", uri)
    assert status == 0 and "s3cr" not in out + err and "again" not in out + err and "postgresql://mlflow:***@db" in out
    (_, prepared), (cmd, env) = calls
    assert prepared == uri and not any("s3cr" in part or "again" in part for part in cmd)
    assert cmd[-4:] == ["--host", "127.0.0.1", "--port", "5000"] and env["MLFLOW_BACKEND_STORE_URI"] == uri
    # `mlflow ui` is `mlflow server`, whose --backend-store-uri reads that variable
    assert next(p for p in server.params if p.name == "backend_store_uri").envvar == "MLFLOW_BACKEND_STORE_URI"


def test_a_store_away_past_the_retry_budget_ends_the_study_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = get_study(str(_write(tmp_path, "slow", SLOW_STUDY)))
    run = StudyRun(study, "smoke", None, f"sqlite:///{tmp_path / 'mlflow.db'}", None, progress=False)

    def away():  # what a call raises once MLflow's and bench's retries are spent
        raise RuntimeError("API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/create failed: Max retries exceeded")

    monkeypatch.setattr(run.scheduler, "plan", away)
    with pytest.raises(stores.StoreError) as err:
        run.run()
    message = str(err.value)
    assert "longer than the retry budget (300 s, BENCH_STORE_RETRY_SECONDS)" in message and "\n" not in message
    assert "Max retries exceeded" in message and "run the same command again to resume" in message
    assert not run.scheduler.heartbeat.thread.is_alive() or run.scheduler.heartbeat.stop_event.is_set()
