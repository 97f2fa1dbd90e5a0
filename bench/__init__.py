"""ablation-bench: textbook deep-learning claims answered with experiments on CIFAR-10.

Rooms: data/ (CIFAR-10 sources, cache, splits, normalisations, augmentation), engine/ (one training loop,
its tasks, models and components), study/ (study files, scheduling, execution, MLflow tracking) and perf/
(speed measurement). config.py (a trial's configuration), claims.py and registry.py are leaves every room
may import; cli.py is the `bench` command and api.py the Python API (bench.train, bench.run_study, bench.plan,
bench.read_bundle), both above the rooms. Doors point one way: study -> engine -> data -> config; nothing
here imports the report at module level.

Importing bench stays light (no torch, optuna or mlflow): the API is imported on first use.
"""

import time as _time

STARTED = _time.time()  # when this process began (before torch loads): `bench study --time-budget` counts from here

API = ("train", "run_study", "plan", "read_bundle", "StudyResult")  # bench/api.py, re-exported
__all__ = ["STARTED", *API]


def __getattr__(name: str):
    """bench.train, bench.run_study, ...: the names of bench/api.py, imported on first use."""
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
