"""Helpers for tests that run whole studies in subprocesses against real stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from bench.study.tracking import experiment_name

SMOKE_SECONDS = 300  # generous bound per smoke study on 2 shared CPU cores (under a minute is typical)


def run_study(
    cwd: Path, name: str, *extra: str, env: dict | None = None, timeout: int = SMOKE_SECONDS
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "study", name, "--profile", "smoke", "--no-progress", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs_of(cwd: Path, study: str, uri: str | None = None):
    client = MlflowClient(uri or f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name(study))
    return client, client.search_runs([exp.experiment_id], max_results=5000)


# Trials of a couple of seconds each: long enough that a signal lands inside one and that a
# second worker (which needs a few seconds to start) still finds trials left to run.
SLOW_STUDY = """
name = "slow"
claims = ["dropout"]
[base]
model = "mlp"
depth = 2
width = 256
n_train = 4000
n_val = 200
n_test = 200
epochs = 3
[factors.dropout]
"p0.0" = { dropout = 0.0 }
"p0.5" = { dropout = 0.5 }
[profiles.smoke]
seeds = 3
[profiles.quick]
seeds = 2
[profiles.full]
seeds = 3
"""


def finished_trials(cwd: Path, storage_url: str | None = None) -> list:
    """Trials of the slow study's final stage (any state), from the default journal or `storage_url`."""
    if storage_url:
        storage = optuna.storages.get_storage(storage_url)
    elif (cwd / "optuna/studies.journal").exists():
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(cwd / "optuna/studies.journal")))
    else:
        return []
    try:
        study = optuna.load_study(study_name="slow/smoke/final", storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)
