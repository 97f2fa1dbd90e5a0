"""The report: results (MLflow runs or exported bundles) -> one DataFrame per source (documented in
report/frame.py) -> a verdict per claim, with its scale, evidence and the runs behind every number.

Rooms: load.py (MLflow -> frame and extras) and bundle.py (portable result files) read results;
studies.py maps claims to the study files that answer them; metrics.py, parts.py, tables.py, stats.py
and verdict.py are what every analysis shares; claims/<topic>.py hold the analyses (found by
discovery); sections.py and sources.py assemble them per source; scale.py states each verdict's scale;
figures.py draws; render.py and markdown.py write, verdict_rows.py the verdicts as data (verdicts.json/.csv);
build.py is `bench report`. load_runs, read_bundle and verdicts below are the Python API.
Doors point one way: the report reads MLflow, the study files and bench/claims.py, never the training
engine (no torch) nor the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# The Python API (README, "Python API"); each function imports what it needs when called, so `import report` is light.


def load_runs(tracking_uri: str | None = None, study: str | None = None) -> pd.DataFrame:
    """The MLflow store's finished trial runs as the report's runs frame (report/frame.py), as `bench report` reads
    them: `tracking_uri` defaults to $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; a store that does not exist or
    cannot be read raises bench.errors.BenchError (one line; nothing is created)."""
    from bench.study.tracking import tracking_uri as default_uri

    from .sources import from_mlflow

    return from_mlflow(default_uri(tracking_uri), study).df


def read_bundle(path: str, study: str | None = None) -> pd.DataFrame:
    """A results bundle (`bench export`) as the report's runs frame of that source: the bundle's runs with an empty
    `url` column (they live in the store that exported them). The bundle's raw runs: bench.read_bundle."""
    from .sources import from_bundle

    return from_bundle(path, study).df


def verdicts(results: list[str] | None = None, tracking_uri: str | None = None, study: str | None = None) -> pd.DataFrame:
    """The report's verdicts without writing it: one row per (claim, source), the columns of verdicts.json
    (report/verdict_rows.py). `results` as `bench report --results` (bundle files, folders, "mlflow"); None: the shipped
    bundles and the MLflow store of `tracking_uri` ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."""
    from bench.study.tracking import tracking_uri as default_uri

    from .build import assemble
    from .sources import gather
    from .verdict_rows import verdicts_frame

    return verdicts_frame(assemble(gather(results, default_uri(tracking_uri), study), None, study))
