"""The `bench` command: each room registers its own subcommands (engine: list, train; study: study, ui;
perf: speed, gpu-check); the report's commands (report, export) are here and import the report lazily.
Errors the user can fix are one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .engine import commands as engine_commands
from .errors import BenchError
from .paths import bundle_path, writable_dir, writable_file
from .perf import commands as perf_commands
from .study import commands as study_commands


def cmd_report(args) -> int:
    out = writable_dir(args.out, "--out (the report folder)")
    summary = writable_file(args.summary_md, "--summary-md (the README summary file)") if args.summary_md else None
    from report.build import build_report

    from .study.tracking import tracking_uri

    path = build_report(tracking_uri(args.tracking_uri), str(out), args.study, args.results, summary, args.figure)
    print(f"report written: {path} (report.md, verdicts.json and verdicts.csv beside it)")
    return 0


def cmd_export(args) -> int:
    out = bundle_path(args.out, "--out")
    from report.bundle import export

    from .study.tracking import tracking_uri

    bundle = export(tracking_uri(args.tracking_uri), out, args.study, args.profile, args.label)
    n_final = sum(s["provenance"]["final_runs"] for s in bundle.studies.values())
    profiles = ", ".join(f"{name} {entry['profile']}" for name, entry in bundle.studies.items())
    print(
        f"exported {len(bundle.runs)} runs ({n_final} final) of {len(bundle.studies)} studies ({profiles}) "
        f"to {out}: {out.stat().st_size / 1e6:.2f} MB"
    )
    return 0


def export_study(args) -> None:
    """`bench study --export FILE`: the study's finished runs at its profile, whatever the execution's outcome."""
    from report.bundle import export

    from .study.files import get_study
    from .study.tracking import tracking_uri

    name = get_study(args.name).name
    try:
        bundle = export(tracking_uri(args.tracking_uri), args.export, [name], args.profile, Path(args.export).name.split(".")[0])
    except BenchError as exc:  # nothing finished yet: the study's own outcome stands
        print(f"nothing exported to {args.export}: {exc}")
        return
    final = sum(s["provenance"]["final_runs"] for s in bundle.studies.values())
    print(f"exported {len(bundle.runs)} runs ({final} final) of {name} ({args.profile}) to {args.export}")


def register_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write the report (HTML + Markdown) from the shipped results and/or the MLflow runs",
        description="Sources, each shown on its own and side by side where several cover a claim: --results takes "
        "bundle files (bench export), folders of them and 'mlflow' (the store of --tracking-uri); by default the "
        "shipped bundles in results/reference/ and the MLflow store.",
    )
    p.add_argument("--out", default="report/out", help="output folder (default report/out)")
    p.add_argument("--study", help="only this study's claims")
    p.add_argument("--results", nargs="+", metavar="PATH", help="bundle files, folders of bundles, or 'mlflow'")
    p.add_argument("--tracking-uri")
    p.add_argument("--summary-md", metavar="FILE", help="also write the README's summary table (and one figure beside it)")
    p.add_argument("--figure", default="lr-classic", help="the figure --summary-md copies (a figure name of the report)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "export",
        help="write a portable results bundle (runs, extras, provenance) from the MLflow store",
        description="One gzipped JSON file that `bench report --results` reads, and pandas reads without MLflow.",
    )
    p.add_argument("--out", required=True, help="the bundle file to write, e.g. results/mine.json.gz")
    p.add_argument("--study", nargs="+", metavar="NAME", help="only these studies (default: every study with runs)")
    p.add_argument(
        "--profile", choices=("smoke", "quick", "full"), help="only this profile (default: each study's most thorough)"
    )
    p.add_argument("--label", help="what the report calls these results (default: the file name without .json.gz)")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=cmd_export)


def version_text() -> str:
    """`bench --version`: the project's version, then Python's and the libraries' (read from the installed packages'
    metadata: nothing is imported)."""
    from importlib import metadata

    from .versions import library_versions

    try:
        own = metadata.version("ablation-bench")
    except metadata.PackageNotFoundError:
        own = "unknown (not installed: pip install -e .)"
    libs = library_versions()
    return f"ablation-bench {own}\n" + "\n".join(f"{name} {version}" for name, version in libs.items())


class VersionAction(argparse.Action):
    """--version: print version_text() and exit 0, whatever else the line holds (no subcommand needed)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="ablation-bench: textbook deep-learning claims, measured on CIFAR-10"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--version", action=VersionAction, help="print the versions of ablation-bench, Python, torch, optuna and mlflow"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    engine_commands.register(sub)
    study_commands.register(sub)
    perf_commands.register(sub)
    register_report(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ["BENCH_DEBUG"] = "1"
    try:
        code = args.func(args)
        if args.command == "study" and getattr(args, "export", None) and not args.plan and args.parent_run is None:
            export_study(args)
        return code
    except BenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
