"""`bench report`: read the runs from MLflow, write index.html + report.md + figures/ into one
folder, and log that folder as the artifacts of a run in the MLflow experiment "bench/report"."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from .figures import FigureMaker
from .load import REPORT_EXPERIMENT, load_extras, load_runs, run_url
from .render import Meta, render_html, render_md
from .section import Link, Section
from .sections import build_sections


def _values(df: pd.DataFrame, column: str) -> list[str]:
    return sorted(set(df[column].dropna().astype(str))) if column in df else []


def write_report(
    df: pd.DataFrame,
    out: str | Path,
    study: str | None = None,
    source: str = "",
    figures: bool = True,
    report_run: Link | None = None,
    extras: dict | None = None,
) -> tuple[Path, list[Section]]:
    """Render the runs frame (columns: report/frame.py) and the study extras (report/frame.py, "Extras")
    into `out`; returns (index.html path, sections)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("*.png"):  # figures of an earlier build must not linger
        old.unlink()
    sections = build_sections(df, FigureMaker(out if figures else None), study, extras)
    finals = df[df["stage"] == "final"] if len(df) else df
    meta = Meta(
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        source=source or "a runs table",
        n_runs=len(df),
        studies=_values(finals, "study"),
        commits=_values(finals, "git_commit"),
        data_sources=_values(finals, "data_source"),
        devices=_values(finals, "device"),
        report_run=report_run,
    )
    index = out / "index.html"
    index.write_text(render_html(sections, meta), encoding="utf-8")
    (out / "report.md").write_text(render_md(sections, meta), encoding="utf-8")
    return index, sections


def build_report(tracking_uri: str, out: str = "report/out", study: str | None = None) -> Path:
    """Load every trial run (or `study`'s) from `tracking_uri`, write the report into `out`, log it to
    MLflow (experiment "bench/report", one run per build) and return the path of index.html."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    from bench.study.tracking import redact

    df = load_runs(tracking_uri, study)
    extras = load_extras(tracking_uri, study)
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id, link = None, None
    try:
        exp = client.get_experiment_by_name(REPORT_EXPERIMENT)
        exp_id = exp.experiment_id if exp else client.create_experiment(REPORT_EXPERIMENT, tags={"bench.kind": "report"})
        run_id = client.create_run(
            exp_id,
            run_name=f"report {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags={"bench.kind": "report", **({"bench.study": study} if study else {})},
        ).info.run_id
        link = Link(run_id[:8], run_url(exp_id, run_id))
    except Exception as exc:  # the report on disk is the product; MLflow logging is a copy
        print(f"warning: could not create the MLflow report run: {type(exc).__name__}: {exc}", file=sys.stderr)
    index, sections = write_report(df, out, study, source=redact(tracking_uri), report_run=link, extras=extras)
    if run_id is not None:
        try:
            client.log_batch(
                run_id,
                params=[Param("n_runs", str(len(df))), Param("out", str(Path(out).resolve()))],
                tags=[RunTag(f"verdict.{s.claim_id}", s.verdict.label) for s in sections],
            )
            client.log_artifacts(run_id, str(Path(out)), artifact_path="report")
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:
            client.set_terminated(run_id, "FAILED")
            print(f"warning: could not log the report to MLflow: {type(exc).__name__}: {exc}", file=sys.stderr)
    return index
