"""`bench list` (every registry and study), `bench study` (run, resume or plan a study), `bench import` and
`bench ui` (the MLflow UI over the project's store)."""

from __future__ import annotations

import argparse
import os
import sys

from .liveness import DEFAULT_GRACE


def listing() -> dict:
    """Every registry (its entries, each with its help line) and every study of studies/ with the claims it answers:
    what `bench list` prints, as data (`bench list --json`)."""
    from bench.data import NORMALIZATIONS
    from bench.engine.components import ACTIVATIONS, INITS, OPTIMIZERS, SCHEDULES
    from bench.engine.models import MODELS

    from .files import list_studies

    registries = {
        "models": MODELS,
        "activations": ACTIVATIONS,
        "inits": INITS,
        "optimizers": OPTIMIZERS,
        "schedules": SCHEDULES,
        "normalizations": NORMALIZATIONS,
    }
    return {
        "registries": {title: [{"name": n, "help": reg.help(n)} for n in reg] for title, reg in registries.items()},
        "studies": [
            {"name": s.name, "description": s.description, "claims": list(s.claims), "profiles": list(s.profiles)}
            for s in list_studies()
        ],
    }


def cmd_list(args) -> int:
    from bench.paths import JsonOut

    json_out = JsonOut(args.json)
    found = listing()
    with json_out.human() as out:
        for title, entries in found["registries"].items():
            print(f"{title}:", file=out)
            for entry in entries:
                print(f"  {entry['name']:<18} {entry['help']}", file=out)
        print("studies:", file=out)
        for study in found["studies"]:
            print(f"  {study['name']:<18} claims: {', '.join(study['claims'])}", file=out)
    json_out.write(found)
    return 0


def cmd_study(args) -> int:
    if args.json and not args.plan:
        from .files import StudyError

        raise StudyError("--json goes with --plan (the plan as JSON); a study's runs are in MLflow: `bench export`")
    if args.plan:  # nothing trained, no store opened
        from .plan import run_plan

        return run_plan(args)
    from .runner import run_study_cli

    if args.export:
        from bench.paths import bundle_path

        bundle_path(args.export, "--export")  # checked before anything trains
    return run_study_cli(args)


def ui_command(uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The `mlflow ui` command line and its environment: the store (which may hold a password) travels in
    MLFLOW_BACKEND_STORE_URI, which mlflow's CLI reads for --backend-store-uri, not on a command line `ps` shows."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)]
    return cmd, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}


FULL_MLFLOW = "full MLflow (its web app), the ui extra: pip install 'ablation-bench[ui]' (make install has it)"


def cmd_ui(args) -> int:
    import subprocess
    from importlib.util import find_spec

    from bench.errors import BenchError

    from .tracking import prepare_ui, tracking_uri
    from .uris import redact

    if find_spec("flask") is None:  # mlflow-skinny (the core install) tracks runs but has no server or UI
        raise BenchError(f"bench ui needs {FULL_MLFLOW}")
    uri = tracking_uri(args.tracking_uri)
    prepare_ui(uri)  # a new SQLite store made whole first; every bench/* experiment tagged as training runs
    # MLflow 3 opens on its GenAI view unless told otherwise; ?workflowType=machine_learning shows the runs tables
    url = f"http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning"
    print(f"MLflow UI for {redact(uri)}: {url}  (Ctrl-C stops it)", flush=True)
    cmd, env = ui_command(uri, args.host, args.port)
    return subprocess.call(cmd, env=env)


def cmd_import(args) -> int:
    from pathlib import Path

    from .importer import import_bundles, keep_as_source
    from .tracking import tracking_uri

    if args.as_source:
        for name in args.bundles:
            from .bundles import read_bundle

            path = Path(name).expanduser()
            read_bundle(path)  # a file that is not a bundle is one line, before anything is copied
            print(
                f"{path}: kept as a report source of its own: {keep_as_source(path)} (`bench report` shows it beside the others)"
            )
        return 0
    counts = import_bundles(
        args.bundles, tracking_uri(args.tracking_uri), args.storage or os.environ.get("BENCH_STORAGE") or None, args.study
    )
    runs, trials, here = (sum(getattr(c, f) for c in counts) for f in ("runs", "trials", "skipped"))
    print(
        f"imported {runs} runs and {trials} Optuna trials of {len(counts)} studies; {here} were here already. "
        f"`bench study NAME --profile P` runs only what is missing, `bench ui` shows them"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="print every registry (and study) with one line per entry")
    p.add_argument("--json", metavar="FILE|-", help="also write the registries and studies as JSON to FILE, or to stdout with -")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("study", help="run a declarative study: a name from studies/ or the path of your own .toml file")
    p.add_argument("name", help="a study in studies/ (e.g. init) or a study file anywhere (e.g. ./my-study.toml)")
    p.add_argument("--profile", choices=["smoke", "quick", "full"])
    p.add_argument("--data-dir")
    p.add_argument(
        "--storage",
        help="Optuna storage URL (default: $BENCH_STORAGE, else a journal file under the working directory); "
        "keep passwords out of it (PGPASSWORD or ~/.pgpass), or put the whole URL in $BENCH_STORAGE",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument(
        "--workers",
        default="auto",
        help="processes sharing the study on this machine: auto (default: bench.perf.concurrency's choice) or a number",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per worker (default: cores / workers)")
    p.add_argument(
        "--pack",
        default="auto",
        help="trials of one architecture trained together per process: auto (default: bench.perf.concurrency's "
        "choice for this device) or a number; a study with packable = false always trains alone",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help=f"a trial whose worker sends no heartbeat for this long is failed and rerun by another worker "
        f"(default {DEFAULT_GRACE:.0f}; workers on this host are checked at once by process id)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="stop cleanly within this many seconds of the command's start: start no trial that --plan's estimate says cannot finish in the "
        "time left, stop the ones still training at the deadline (rerun next time), exit 0 saying what is left",
    )
    p.add_argument(
        "--export",
        metavar="FILE",
        help="afterwards, write this study's finished runs at the profile to a results bundle (.json.gz), however it ended",
    )
    p.add_argument(
        "--system-metrics",
        action="store_true",
        help="also log system metrics (CPU, memory, disk, network; GPU where pynvml is installed) to each trial's "
        "MLflow run every 5 s (MLflow's sampler, psutil; off by default)",
    )
    p.add_argument("--parent-run", help=argparse.SUPPRESS)  # set by --workers for the extra processes
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # --time-budget as a time, for the extra processes
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the trials, images and epochs of the profile and the estimated wall time on this device; train nothing",
    )
    p.add_argument("--device", default="auto", help="--plan: estimate for this device (auto, cpu, cuda) (default auto)")
    p.add_argument(
        "--json",
        metavar="FILE|-",
        help="--plan: also write the plan (trials, images, epochs, estimated seconds per stage and arm, total, device) "
        "as JSON to FILE, or to stdout with - (the rest on stderr)",
    )
    p.set_defaults(func=cmd_study)
    p = sub.add_parser(
        "import",
        help="write a results bundle's runs into the local stores, so its studies go on from them",
        description="Each run goes into the MLflow store (marked imported) and into the Optuna studies as a finished "
        "trial, exactly once by its original run id: importing again adds nothing. A bundle measured with another "
        "study definition, profile or data is refused with one line, before anything is written.",
    )
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="results bundles (.json.gz, written by bench export)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument(
        "--storage", help="Optuna storage URL (default: $BENCH_STORAGE, else the journal file under the working directory)"
    )
    p.add_argument("--study", nargs="+", metavar="NAME", help="only these studies of the bundles (default: all of them)")
    p.add_argument(
        "--as-source",
        action="store_true",
        help="write nothing into the stores: keep the bundle as a report source of its own (results/sources/)",
    )
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("ui", help="open the MLflow UI over the project's store (bound to 127.0.0.1)")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
