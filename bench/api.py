"""The Python API: one trial, a study, its plan and a results bundle's runs, each the same as its `bench` command
(README, "Python API"). A top door like cli.py, above the rooms; `bench` re-exports it on first use (bench/__init__.py),
so `import bench` loads no torch, optuna or mlflow. The report's side (an MLflow store or a bundle as the report's
frame, the verdicts) is in the report package: report.load_runs, report.read_bundle, report.verdicts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# `bench study` options that run_study does not take: the study and profile are its arguments, --plan is plan(), and
# the hidden ones belong to the processes a study spawns
NOT_OPTIONS = {"command", "func", "debug", "name", "profile", "plan", "json", "device", "parent_run", "deadline"}


def train(**overrides: Any) -> dict[str, Any]:
    """Train one trial, like `bench train key=value ...`: config keys (docs/record.md) as keyword arguments, typed
    (lr=0.1, batchnorm=False) or as strings; returns its record, the dict `bench train --json` writes. Nothing is
    logged to MLflow. A bad key or value raises bench.config.ConfigError (one line, as the command prints it)."""
    from .engine.loop import train_trial
    from .engine.rules import make_config

    return train_trial(make_config(overrides), progress=False)


@dataclass(frozen=True)
class StudyResult:
    """What run_study did: where the runs are (report.load_runs(result.tracking_uri, study=result.study) reads
    them) and `bench study`'s exit status."""

    study: str
    profile: str
    status: int  # 0: every trial finished, or a --time-budget stopped it cleanly; 1: some failed (rerun next time)
    tracking_uri: str
    storage: str | None  # the Optuna storage URL; None: the journal under the working directory
    export: str | None = None  # the results bundle written afterwards (export=FILE)

    @property
    def ok(self) -> bool:
        return self.status == 0


def study_options() -> list[str]:
    """The options run_study takes: `bench study`'s, by their long names with _ for - (e.g. tracking_uri)."""
    from .cli import build_parser

    return sorted(set(vars(build_parser().parse_args(["study", "-"]))) - NOT_OPTIONS)


def run_study(name: str, profile: str = "smoke", **options: Any) -> StudyResult:
    """Run (or resume) a study, like `bench study NAME --profile PROFILE`: `name` is a study of studies/ or the path
    of a study file; `options` are the command's options by their long names with _ for - (workers=2,
    tracking_uri="sqlite:///mlflow.db", storage=..., data_dir=..., time_budget=600, export="mine.json.gz",
    no_progress=True, ...; study_options() lists them). A time budget counts from this call. Errors the command
    prints as one line raise bench.errors.BenchError; an unknown option raises TypeError."""
    from .cli import build_parser, export_study
    from .study.files import PROFILES, StudyError
    from .study.tracking import tracking_uri

    unknown = sorted(set(options) - set(study_options()))
    if unknown:
        raise TypeError(f"run_study() got unknown options {unknown}; options: {', '.join(study_options())}")
    if profile not in PROFILES:
        raise StudyError(f"profile {profile!r}: expected one of {', '.join(PROFILES)}")
    args = build_parser().parse_args(["study", name, "--profile", profile])
    for key, value in options.items():
        setattr(args, key, str(value) if key in ("workers", "pack") else value)
    if args.time_budget is not None and args.time_budget > 0:
        args.deadline = time.time() + float(args.time_budget)  # from this call, not from when bench was imported
    status = args.func(args)
    if args.export:
        export_study(args)
    return StudyResult(args.name, args.profile, status, tracking_uri(args.tracking_uri), args.storage, args.export)


def plan(name: str, profile: str | None = None, device: str = "auto") -> dict[str, Any]:
    """What `bench study NAME --plan --json -` prints: the trials, images, epochs and estimated seconds per stage and
    arm, the totals and the device kind estimated for; nothing is trained, no store is opened. `profile` None: the
    one the study would run at here (full on a CUDA device, else quick)."""
    from .study.files import get_study
    from .study.plan import default_profile, device_kind, plan_summary

    return plan_summary(get_study(name), profile or default_profile()[0], device_kind(device))


def read_bundle(path: str, study: str | None = None) -> pd.DataFrame:
    """A results bundle's runs (`bench export`, e.g. results/reference/quick.json.gz) as a DataFrame: one row per trial
    run with the columns of report/frame.py but `url`, as the bundle holds them (or only `study`'s). Its studies'
    provenance and extras: bench.study.bundles.read_bundle. The report's frame of a bundle: report.read_bundle."""
    from .study.bundles import read_bundle as read

    runs = read(path).runs
    return runs[runs["study"] == study].reset_index(drop=True) if study is not None and len(runs) else runs
