"""`bench report`: read the results (shipped bundles and/or the MLflow store), write index.html + report.md +
verdicts.json/.csv + figures/ into one folder, and log that folder as the artifacts of a run in the MLflow experiment "bench/report"."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from bench.study.stores import one_line
from bench.study.uris import mlflow_client

from .figures import FigureMaker
from .frame import compact, distinct
from .load import REPORT_EXPERIMENT, run_url
from .markdown import render_md, write_summary
from .render import Meta, SourceMeta, render_html
from .scale import scale_of
from .section import Link, Section
from .sections import build_sections
from .sources import Source, View, gather, views
from .verdict import NOT_MEASURED
from .verdict_rows import write_verdicts


def source_meta(src: Source) -> SourceMeta:
    finals = src.df[src.df["stage"] == "final"] if len(src.df) else src.df
    return SourceMeta(
        heading=src.heading(),
        origin=src.origin,
        n_runs=len(src.df),
        exported=src.exported,
        studies=distinct(finals, "study"),
        commits=distinct(finals, "git_commit"),
        data_sources=distinct(finals, "data_source"),
        devices=distinct(finals, "device"),
    )


def assemble(sources: list[Source], out: Path | None, study: str | None = None) -> list[View]:
    """Every source's sections (figures drawn into `out`, none when None), each with its source and scale, grouped
    by claim across sources."""
    many = len(sources) > 1
    per_source = []
    for src in sources:
        df = compact(src.df)
        secs = build_sections(df, FigureMaker(out, src.slug() if many else ""), study, src.extras)
        for sec in secs:
            sec.source = src.heading()
            if sec.verdict.label != NOT_MEASURED:
                sec.scale = scale_of(df, sec.studies, src.studies)
        per_source.append(secs)
    return views(per_source)


def write_report(
    results: pd.DataFrame | list[Source],
    out: str | Path,
    study: str | None = None,
    source: str = "",
    figures: bool = True,
    report_run: Link | None = None,
    extras: dict | None = None,
) -> tuple[Path, list[Section]]:
    """Render the results into `out`: a list of Sources, or one runs frame (columns: report/frame.py) with its
    study extras (report/frame.py, "Extras") and `source` naming where it came from. Returns (index.html path,
    the headline section of each claim)."""
    if isinstance(results, pd.DataFrame):
        results = [Source(source or "runs", source or "a runs table", results, extras or {})]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("*.png"):  # figures of an earlier build must not linger
        old.unlink()
    vs = assemble(results, out if figures else None, study)
    meta = Meta(time.strftime("%Y-%m-%d %H:%M:%S"), [source_meta(s) for s in results], report_run)
    index = out / "index.html"
    index.write_text(render_html(vs, meta), encoding="utf-8")
    (out / "report.md").write_text(render_md(vs, meta), encoding="utf-8")
    write_verdicts(vs, out)  # the summary table's values per (claim, source), for scripts and spreadsheets
    return index, [v.headline for v in vs]


def build_report(
    tracking_uri: str,
    out: str = "report/out",
    study: str | None = None,
    results: list[str] | None = None,
    summary: Path | None = None,
    figure: str = "lr-classic",
) -> Path:
    """Gather the sources (`results`: bundle files or folders and/or "mlflow"; None = the shipped bundles and the
    MLflow store at `tracking_uri`), write the report into `out` and, when the MLflow store is a source, log it
    there (experiment "bench/report", one run per build; a report of several stores logs to the first); `summary`: also write the README's summary table there,
    with the report's figure `figure` beside it. Returns the path of index.html."""
    sources = gather(results, tracking_uri, study)
    store = next((s.store for s in sources if s.store), None)
    run_id, link, client = None, None, None
    if store is not None:
        client = mlflow_client(store)
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
            print(f"warning: could not create the MLflow report run: {one_line(exc)}", file=sys.stderr)
    index, sections = write_report(sources, out, study, report_run=link)
    if summary is not None:
        copied = write_summary(sections, Path(out), Path(summary), figure)
        print(f"summary written: {summary}" + (f", figure {copied}" if copied else f" (no figure named {figure})"))
    if run_id is not None:
        _log(client, run_id, sections, out, sum(len(s.df) for s in sources))
    return index


def _log(client, run_id: str, sections: list[Section], out: str, n_runs: int) -> None:
    from mlflow.entities import Param, RunTag

    try:
        client.log_batch(
            run_id,
            params=[Param("n_runs", str(n_runs)), Param("out", str(Path(out).resolve()))],
            tags=[RunTag(f"verdict.{s.claim_id}", s.verdict.label) for s in sections if s.claim_id],
        )
        client.log_artifacts(run_id, str(Path(out)), artifact_path="report")
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:
        client.set_terminated(run_id, "FAILED")
        print(f"warning: could not log the report to MLflow: {one_line(exc)}", file=sys.stderr)
