"""A new SQLite MLflow store, created whole: no reader sees it half-migrated, two processes never migrate one file
at once, and the empty store MLflow's migrations build is kept in the cache for the next new store."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

MIGRATION_WAIT = 60.0  # seconds to wait for another process to finish creating a new SQLite store


def _sqlite_ready(path: Path) -> bool:
    """Whether the SQLite MLflow store at `path` is fully migrated and holds its default experiment."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as con:
            version = con.execute("SELECT version_num FROM alembic_version").fetchone()
            default = con.execute("SELECT count(*) FROM experiments WHERE experiment_id = 0").fetchone()
    except sqlite3.Error:
        return False
    return bool(version) and version[0] == _get_latest_schema_revision() and bool(default and default[0])


def create_sqlite_store(path: Path) -> None:
    """Make sure a complete MLflow SQLite store exists at `path` without migrating it where others can see.

    MLflow migrates a new SQLite file in place, and two processes doing so at once crash one another
    (alembic: "Online migration expected to match one row"). Here the store is built whole in a temporary
    file and linked into place; when another process (`mlflow ui`, a notebook) created the file first,
    this waits until its migration is done instead of migrating alongside it."""
    from bench.data.cache import locked

    if path.exists():
        _wait_ready(path)
        return
    with locked(path.with_name(path.name + ".lock")):  # bench processes: one of them builds it
        if path.exists():
            _wait_ready(path)
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            _build_sqlite_store(tmp)
            try:
                os.link(tmp, path)  # atomic, and fails rather than replace a file another process made meanwhile
            except FileExistsError:
                _wait_ready(path)
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
                if leftover.exists():
                    leftover.unlink()


def _build_sqlite_store(tmp: Path) -> None:
    """A new, empty MLflow store at `tmp`: a copy of the one this MLflow version built before (kept in the cache),
    else built by MLflow (its ~100 migrations from scratch take seconds) and kept for next time."""
    import mlflow
    from mlflow.store.db.utils import _get_latest_schema_revision

    from bench.data.cache import cache_dir

    template = cache_dir() / "mlflow" / f"empty-{mlflow.__version__}-{_get_latest_schema_revision()}.db"
    if template.is_file():
        shutil.copyfile(template, tmp)
        if _sqlite_ready(tmp) and _set_default_experiment(tmp):
            return
        tmp.unlink()  # a damaged copy: MLflow builds it again below, and the template is replaced
    _migrate_sqlite_store(tmp)
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        shutil.copyfile(tmp, partial)
        os.replace(partial, template)  # whole or not at all for a store made at the same moment elsewhere
    except OSError:
        pass  # a cache that cannot be written costs the next new store its migrations, nothing else


def _set_default_experiment(path: Path) -> bool:
    """Point a copied store's Default experiment (id 0) where MLflow would have made it: ./mlruns/0 of this working
    directory, created now. Whether the row was there to update."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    location = append_to_uri_path(resolve_uri_if_local(DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH), "0")
    now = int(time.time() * 1000)
    with sqlite3.connect(path) as con:
        done = con.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? WHERE experiment_id = 0",
            (location, now, now),
        ).rowcount
    con.close()
    return done == 1


def _migrate_sqlite_store(tmp: Path) -> None:
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{tmp}"
    quiet = [logging.getLogger(name) for name in ("mlflow.store.db.utils", "alembic")]
    levels = [log.level for log in quiet]
    for log in quiet:  # MLflow announces each migration step at INFO: the study's output stays the study's
        log.setLevel(logging.WARNING)
    try:
        SqlAlchemyStore(uri, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)  # tables, migrations, default experiment
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
    engine = SqlAlchemyStore._engine_map.pop(uri, None)  # MLflow caches engines per URI: close this one
    if engine is not None:
        engine.dispose()


def _wait_ready(path: Path) -> None:
    deadline = time.monotonic() + MIGRATION_WAIT
    while not _sqlite_ready(path) and time.monotonic() < deadline:
        time.sleep(0.2)  # past the deadline MLflow opens it as it is and says what is wrong
