"""The `bench` command: each room registers its own subcommands (engine: list, train; study: study, ui;
perf: speed, gpu-check); the report's commands are here. Errors the user can fix are one line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .engine import commands as engine_commands
from .errors import BenchError
from .perf import commands as perf_commands
from .study import commands as study_commands


def cmd_report(args) -> int:
    from report.build import build_report

    from .study.tracking import tracking_uri

    path = build_report(tracking_uri(args.tracking_uri), args.out, args.study)
    print(f"report written: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="ablation-bench: textbook deep-learning claims, measured on CIFAR-10"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    engine_commands.register(sub)
    study_commands.register(sub)
    perf_commands.register(sub)
    p = sub.add_parser("report", help="write the report (HTML + Markdown) from the MLflow runs")
    p.add_argument("--out", default="report/out", help="output folder (default report/out)")
    p.add_argument("--study", help="only this study's claims")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ["BENCH_DEBUG"] = "1"
    try:
        return args.func(args)
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
