"""Shared fixtures: the real CIFAR-10 copy when present, temporary MLflow/Optuna stores."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg"


def real_data_dir() -> str | None:
    """$BENCH_DATA_DIR, else ../shared/data/cifar10-jpeg beside the repository, else None."""
    env = os.environ.get("BENCH_DATA_DIR")
    if env and Path(env).exists():
        return env
    return str(SHARED_JPEG) if SHARED_JPEG.exists() else None


@pytest.fixture(scope="session")
def data_dir() -> str:
    path = real_data_dir()
    if path is None:
        pytest.skip("no CIFAR-10 here: set BENCH_DATA_DIR (CI uses ../shared/data/cifar10-jpeg)")
    return path


@pytest.fixture(scope="session")
def cifar(data_dir):
    from bench.data import load_cifar10

    return load_cifar10(data_dir)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, data_dir):
    """name -> (folder, finished process) of `bench study NAME --profile smoke` in a folder of its own (fresh stores),
    run once per session: every test that needs a finished smoke study reads the same one and changes nothing."""
    from studyrun import run_study

    done: dict[str, tuple[Path, object]] = {}

    def run(name: str):
        if name not in done:
            folder = tmp_path_factory.mktemp(f"smoke-{name}")
            done[name] = (folder, run_study(folder, name, "--data-dir", data_dir))
        return done[name]

    return run


@pytest.fixture
def bench_cli(capsys, monkeypatch):
    """`bench ARGS` run in this process (no interpreter start-up): (exit status, stdout, stderr).
    `env` sets environment variables for the call; tests/test_train.py keeps a real subprocess."""
    from bench.cli import main

    def run(*args: str, env: dict | None = None) -> tuple[int, str, str]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        status = main(list(args))
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


# `mlflow server` / `mlflow ui` need full MLflow (the ui extra); the core install has only mlflow-skinny's client
needs_mlflow_server = pytest.mark.skipif(
    importlib.util.find_spec("flask") is None,
    reason="needs full MLflow's server: pip install 'ablation-bench[ui]' (make install has it)",
)
