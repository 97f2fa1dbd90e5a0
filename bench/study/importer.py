"""`bench import`: a results bundle's runs written into this machine's stores, so that its studies go on from them.

MLflow gets each study's runs as they were measured (experiment bench/<study>, one parent run per imported study,
child runs with their params, tags, per-epoch metrics at their epochs, record.json, start and end times), marked
as imported (bench.imported_from, bench.origin_run_id). Optuna gets them as finished trials: tuning trials with
the value they tried, their objective and per-epoch validation accuracy, in their original order; final trials
with their arm and seed. `bench study` then runs only what is missing and tunes on from the imported history.

Exactly once, by the run's origin id: a run already in the MLflow store is not written again, a trial already in
the Optuna study is not added again (a second import, or one that resumes an interrupted import, adds what is
missing only). A final (arm, seed) already finished here and the tuning of an arm already begun here stay as
they are. A bundle measured with another study definition or on other data than this store's runs is refused
before anything is written; `--as-source` keeps it as a report source of its own instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from mlflow.entities import Metric
from optuna.trial import TrialState

from bench.errors import BenchError

from . import tracking as tags
from .bundles import SOURCES, Bundle, definition, is_missing, measured_differently, read_bundle
from .files import Study, StudyError, get_study
from .liveness import DEFAULT_GRACE
from .scheduler import RUN_ID, STATUS, Scheduler, final_key, objective
from .stores import open_storage
from .tracking import Tracker, missing_store, store_digests

IMPORTED = "imported_run_id"  # Optuna trial user attribute: the origin run id of the run it was imported from
# Columns of a bundle row that come from the run and its tags, not from its record (report/load.py's `flatten`)
IDENTITY = {"run_id", "experiment_id", "run_name", "url", "start_time", "study", "arm", "seed", "stage", "profile"}
IDENTITY |= {"claims", "tuned_lr", "tune_lr", "optuna_trial", "origin_run_id"}


def curve(row: dict[str, Any]) -> dict[int, float]:
    """A run's validation accuracy after each epoch (1, 2, ...): its trial's intermediate values, as a trial
    trained here reports them (Scheduler.report)."""
    history = row.get("history.val_acc")
    if not isinstance(history, (list, tuple)):
        return {}
    return {e: float(v) for e, v in enumerate(history) if e > 0 and v is not None}


class ImportRefused(BenchError):
    """A bundle that cannot continue this store's studies (another definition, profile or data); one line."""


@dataclass
class Counts:
    """What one study's import did."""

    study: str
    profile: str
    runs: int = 0  # MLflow runs written
    trials: int = 0  # Optuna trials added
    skipped: int = 0  # runs already here (by origin id), or (arm, seed) already finished here
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.study} ({self.profile}): {self.runs} runs and {self.trials} trials imported, {self.skipped} already here"
        return text + "".join(f"; {n}" for n in self.notes)


def record_of(row: dict[str, Any]) -> dict[str, Any]:
    """The trial's record.json from its bundle row: everything but the run's identity columns."""
    return {k: v for k, v in row.items() if k not in IDENTITY and not k.startswith("factor.") and not is_missing(v)}


def origin_of(row: dict[str, Any]) -> str:
    return str(row.get("origin_run_id") or row["run_id"])


def epoch_metrics(row: dict[str, Any], start: int) -> list[Metric]:
    """The run's per-epoch metrics from its history lists, at their epochs (lists measured after training steps
    only start at epoch 1), stamped at the run's start plus the training seconds of that epoch."""
    epochs = row.get("history.epoch") or []
    seconds = row.get("history.seconds") or []
    out = []
    for key, values in row.items():
        if not key.startswith("history.") or not isinstance(values, list):
            continue
        offset = len(epochs) - len(values)
        for i, v in enumerate(values):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                e = i + offset
                stamp = start + int(1000 * (seconds[e] or 0)) if e < len(seconds) and seconds[e] is not None else start
                out.append(Metric(key[len("history.") :], float(v), stamp, e))
    return out


def check_bundle(
    bundle: Bundle, path: Path, tracking_uri: str, only: list[str] | None = None
) -> list[tuple[Study, str, pd.DataFrame]]:
    """(study file, profile, its runs) for each study of the bundle (of `only`, when given); ImportRefused when any
    was measured with another definition, at a profile the study file lacks, or on other data than this store's runs
    of it."""
    out, refusals = [], []
    missing = sorted(set(only or ()) - set(bundle.studies))
    if missing:
        raise ImportRefused(f"{path}: no runs of {', '.join(missing)} in it (it holds {', '.join(bundle.studies) or 'none'})")
    for name, entry in bundle.studies.items():
        if only and name not in only:
            continue
        runs = bundle.runs[(bundle.runs["study"] == name) & (bundle.runs["profile"] == entry["profile"])]
        if runs.empty:
            continue
        profile = entry["profile"]
        try:
            study = get_study(name)
        except StudyError:
            refusals.append(f"{name}: no study file of that name here")
            continue
        if profile not in study.profiles:
            refusals.append(f"{name}: profile {profile} is not in {study.path}")
            continue
        recorded = entry.get("definition")
        if not recorded:
            refusals.append(f"{name}: the bundle does not record the study definition its runs followed")
            continue
        differ = measured_differently(recorded, definition(study, profile))
        if differ:
            refusals.append(f"{name} ({profile}): measured with another definition than {study.path}: {'; '.join(differ)}")
            continue
        theirs = set(runs["data_digest"].dropna()) if "data_digest" in runs else set()
        ours = {} if missing_store(tracking_uri) else store_digests(tracking_uri, name, profile)
        if theirs and ours and theirs != set(ours):
            refusals.append(
                f"{name} ({profile}): measured on {', '.join(sorted(set(runs['data_source'].dropna())))} "
                f"(data {', '.join(sorted(theirs))}), this store's runs on {', '.join(sorted(set(ours.values())))} "
                f"(data {', '.join(sorted(ours))})"
            )
            continue
        out.append((study, profile, runs))
    if refusals:
        raise ImportRefused(
            f"{path}: not imported ({' | '.join(refusals)}); nothing was written. `bench import {path} --as-source` "
            f"keeps it as a report source of its own"
        )
    return out


class StudyImport:
    """One study's runs of one bundle into one MLflow store and one Optuna storage."""

    def __init__(self, bundle: Bundle, path: Path, study: Study, profile: str, tracking_uri: str, storage_url: str | None):
        self.bundle, self.path, self.study, self.profile = bundle, path, study, profile
        self.tracker = Tracker(tracking_uri, study.name)
        self.scheduler = Scheduler(study, profile, open_storage(storage_url), DEFAULT_GRACE)
        self.counts = Counts(study.name, profile)
        self.parent: str | None = None
        self.trials: dict[str, list] = {}  # Optuna study name -> its trials, read once (StudyImport._trials)
        self.source = f"{path.name} ({bundle.label})"
        self.tuned = study.tuning.param if study.tuning is not None and study.tuning_trials(profile) else None
        here = self.tracker.search(f"attributes.status = 'FINISHED' AND tags.`{tags.PROFILE}` = '{profile}'")
        self.in_store = {r.data.tags.get(tags.ORIGIN_RUN_ID) or r.info.run_id: r.info.run_id for r in here}
        for r in self.tracker.running_runs(f"tags.`{tags.IMPORTED_FROM}` != ''"):  # an import that was interrupted
            self.tracker.fail_run(r.info.run_id, "import interrupted before this run was complete; imported again")

    def run(self, rows: pd.DataFrame) -> Counts:
        try:
            order = ["optuna_trial", "start_time"] if "optuna_trial" in rows else ["start_time"]
            rows = rows.sort_values(order, kind="stable", na_position="last")
            by_arm = {a.name: a for a in self.study.arms(self.profile)}
            for row in rows[rows["stage"] == "tune"].to_dict("records"):
                if row["arm"] in by_arm:
                    self._tune(by_arm[row["arm"]], row)
            for row in rows[rows["stage"] == "final"].to_dict("records"):
                if row["arm"] in by_arm and int(row["seed"]) in self.scheduler.seeds:
                    self._final(row)
            self._extras()
            if self.parent:
                self.tracker.end_run(self.parent, "FINISHED")
        finally:
            self.scheduler.close()
        return self.counts

    # ------------------------------------------------------------------ one trial each
    def _tune(self, arm, row: dict[str, Any]) -> None:
        ostudy = self.scheduler.tune_study(arm)
        trials = [t for t in self._trials(ostudy) if t.state == TrialState.COMPLETE]
        origin = origin_of(row)
        if any(origin in (t.user_attrs.get(IMPORTED), t.user_attrs.get(RUN_ID)) for t in trials):
            self.counts.skipped += 1
            return
        if any(IMPORTED not in t.user_attrs for t in trials):  # tuning begun here: its own history decides
            note = f"tuning of {arm.name} already begun here: its imported tuning trials are left out"
            self.counts.notes += [note] if note not in self.counts.notes else []
            return
        t = self.study.tuning
        value = float(row[f"config.{t.param}"])
        dist = optuna.distributions.FloatDistribution(t.low, t.high, log=t.log)
        self._add(ostudy, row, {t.param: value}, {t.param: dist}, {}, curve(row), f"{tags.TUNE}{t.param}", value)

    def _final(self, row: dict[str, Any]) -> None:
        ostudy = self.scheduler.final_study()
        key = (row["arm"], int(row["seed"]))
        done = [t for t in self._trials(ostudy) if t.state == TrialState.COMPLETE and final_key(t) == key]
        if done:
            self.counts.skipped += 1
            return
        tuned = (f"{tags.TUNED}{self.tuned}", row.get(f"config.{self.tuned}")) if self.tuned else None
        system = {"fixed_params": {"arm": key[0], "seed": key[1]}}
        self._add(ostudy, row, {}, {}, system, curve(row), *(tuned or (None, None)))

    def _add(self, ostudy, row, params, dists, system, steps, value_tag, value) -> None:
        """The run into MLflow (unless its origin is there already), then its trial into Optuna."""
        origin = origin_of(row)
        record = record_of(row)
        number = len(self._trials(ostudy))
        run_id = self.in_store.get(origin)
        if run_id is None:
            run_id = self._write_run(row, record, ostudy.study_name, number, {value_tag: value} if value_tag else {})
            self.counts.runs += 1
        else:
            self.counts.skipped += 1
        attrs = {RUN_ID: run_id, STATUS: record["status"], IMPORTED: origin}
        trial = optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            value=objective(record),
            params=params,
            distributions=dists,
            user_attrs=attrs,
            system_attrs=system,
            intermediate_values=steps,
        )
        ostudy.add_trial(trial)
        self.trials[ostudy.study_name].append(trial)
        self.counts.trials += 1

    def _trials(self, ostudy) -> list:
        """The Optuna study's trials: read from the storage once, then kept as this import adds to them (reading
        them whole for every trial added made an import quadratic in its trials)."""
        if ostudy.study_name not in self.trials:
            self.trials[ostudy.study_name] = list(ostudy.get_trials(deepcopy=False))  # a list of our own: appended to
        return self.trials[ostudy.study_name]

    def _write_run(self, row, record, optuna_study: str, number: int, value: dict[str, Any]) -> str:
        start = int(row.get("start_time") or 0) or None
        run_tags = {
            tags.STUDY: self.study.name,
            tags.ARM: row["arm"],
            tags.SEED: str(int(row["seed"])),
            tags.CLAIMS: ",".join(self.study.claims),
            tags.PROFILE: self.profile,
            tags.STAGE: row["stage"],
            tags.OPTUNA_STUDY: optuna_study,
            tags.OPTUNA_TRIAL: str(number),
            tags.IMPORTED_FROM: self.source,
            tags.ORIGIN_RUN_ID: origin_of(row),
            **{f"{tags.FACTOR}{k[len('factor.') :]}": v for k, v in row.items() if k.startswith("factor.") and not is_missing(v)},
            **{k: str(v) for k, v in value.items() if v is not None},
            **({tags.PACKED: str(int(row["packed"]))} if not is_missing(row.get("packed")) and row["packed"] > 1 else {}),
        }
        params = {k[len("config.") :]: v for k, v in record.items() if k.startswith("config.")}
        run_id = self.tracker.start_run(row.get("run_name") or "", run_tags, None, self._parent(), start)
        end = (start or 0) + int(1000 * float(record.get("seconds") or 0)) or None
        self.tracker.log_record(run_id, record, timestamp=end, params=params, metrics=epoch_metrics(row, start or 0))
        self.tracker.end_run(run_id, "FINISHED", end)
        self.in_store[origin_of(row)] = run_id
        return run_id

    def _parent(self) -> str:
        """The parent run of this study's imported runs, made with the first of them."""
        if self.parent is None:
            self.parent = self.tracker.start_run(
                f"{self.study.name} {self.profile} imported from {self.path.name}",
                {
                    tags.STUDY: self.study.name,
                    tags.PROFILE: self.profile,
                    tags.KIND: "study",
                    tags.CLAIMS: ",".join(self.study.claims),
                    tags.IMPORTED_FROM: self.source,
                },
                {
                    "arms": ",".join(a.name for a in self.study.arms(self.profile)),
                    "seeds": len(self.scheduler.seeds),
                    "study_file": self.study.path,
                    "bundle": str(self.path),
                    "bundle_exported": self.bundle.exported,
                },
            )
        return self.parent

    def _extras(self) -> None:
        """The study's extras, where this store has no finished one of that name."""
        for name, payload in (self.bundle.extras.get(self.study.name) or {}).items():
            if self.tracker.find_finished({tags.KIND: "extra", tags.EXTRA: name}):
                continue
            run_tags = {tags.STUDY: self.study.name, tags.KIND: "extra", tags.EXTRA: name, tags.PROFILE: self.profile}
            run_id = self.tracker.start_run(f"extra {name}", {**run_tags, tags.IMPORTED_FROM: self.source}, parent=self._parent())
            body = {k: v for k, v in payload.items() if k not in ("run_id", "url", "start_time")}
            self.tracker.log_dict(run_id, body, f"{name}.json")
            self.tracker.end_run(run_id, "FINISHED")
            self.counts.runs += 1


def keep_as_source(path: Path, folder: Path | None = None) -> Path:
    """--as-source: a copy of the bundle where the report looks for sources of their own (results/sources/)."""
    folder = folder or SOURCES
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    if dest.resolve() != path.resolve():
        shutil.copyfile(path, dest)
    return dest


def import_bundles(
    paths: list[str],
    tracking_uri: str,
    storage_url: str | None,
    only: list[str] | None = None,
    say: Callable[[str], None] = print,
) -> list[Counts]:
    """Every study (of `only`, when given) of each bundle into the stores; each bundle is checked whole before any
    of it is written."""
    out = []
    for name in paths:
        path = Path(name).expanduser()
        bundle = read_bundle(path)
        checked = check_bundle(bundle, path, tracking_uri, only)
        if bundle.version < 2:
            say(f"{path}: a version 1 bundle: tuning trials are ordered by their start times")
        for study, profile, runs in checked:
            counts = StudyImport(bundle, path, study, profile, tracking_uri, storage_url).run(runs)
            say(f"{path.name}: {counts.line()}")
            out.append(counts)
    return out
