"""The study runner: Optuna sweeps (TPE tuning per arm, then arms x seeds final runs),
every trial logged to MLflow, resumable: finished trials are never repeated."""
from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from tqdm import tqdm

from .config import as_dict
from .data import load_cifar10
from .studies import Arm, Study, StudyError, get_study
from .tracking import RunLogger, Tracker, redact, tracking_uri, worker_tags
from .train import train_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runner prints its own progress
DEFAULT_JOURNAL = "optuna/studies.journal"  # under the working directory (the project root via make)


def default_profile() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "full", f"CUDA device found ({torch.cuda.get_device_name(0)})"
    return "quick", "no CUDA device found; the full profile is meant for a GPU"


def open_storage(url: str | None) -> Any:
    """An Optuna storage: the URL given (sqlite:///, postgresql://, ...) or the default journal file."""
    if url:
        try:
            return optuna.storages.get_storage(url)
        except Exception as exc:
            raise StudyError(f"cannot open Optuna storage {redact(url)}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    Path(DEFAULT_JOURNAL).parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(DEFAULT_JOURNAL))


def is_stale(host: str | None, pid: str | None) -> bool:
    """A RUNNING trial is stale when its worker process on this host no longer exists."""
    if host != socket.gethostname() or not pid:
        return False  # another machine's worker: not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return int(pid) == os.getpid()  # our own pid from an earlier life of this process id


def fail_stale(study: optuna.Study) -> int:
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(t.user_attrs.get("host"), str(t.user_attrs.get("pid", ""))):
            study.tell(t.number, state=TrialState.FAIL)
            n += 1
    return n


@dataclass
class Job:
    stage: str  # "tune" or "final"
    arm: Arm
    optuna_study: optuna.Study
    remaining: int  # trials still to run in this optuna study


class StudyRun:
    """One execution of `bench study`: plans the remaining trials and runs them."""

    def __init__(self, study: Study, profile: str, storage_url: str | None, uri: str, data_dir: str | None, progress: bool):
        self.study, self.profile, self.progress = study, profile, progress
        self.storage = open_storage(storage_url)
        self.tracker = Tracker(uri, study.name)  # creates the experiment before any trial starts
        self.tracker.end_stale_runs(is_stale)  # runs left RUNNING by a killed worker on this host
        self.data_dir = data_dir
        self.arms = study.arms(profile)
        self.seeds = study.seeds(profile)
        self.failures: list[str] = []

    # ------------------------------------------------------------------ planning
    def _optuna(self, suffix: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        name = f"{self.study.name}/{self.profile}/{suffix}"
        s = optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True,
                                direction="maximize", sampler=sampler)
        fail_stale(s)
        return s

    def _tune_study(self, arm: Arm) -> optuna.Study:
        return self._optuna(f"tune/{arm.name}", optuna.samplers.TPESampler(seed=0, n_startup_trials=3))

    def tuned_value(self, arm: Arm) -> float | None:
        if self.study.tuning is None or self.study.tuning_trials(self.profile) == 0:
            return None
        done = [t for t in self._tune_study(arm).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not done:
            return None
        return max(done, key=lambda t: t.value).params[self.study.tuning.param]

    def plan(self) -> tuple[list[Job], int, int]:
        """(jobs still to run, trials done, trials in total)."""
        jobs, done, total = [], 0, 0
        budget = self.study.tuning_trials(self.profile)
        if budget:
            for arm in self.arms:
                s = self._tune_study(arm)
                n_done = len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                done, total = done + min(n_done, budget), total + budget
                if n_done < budget:
                    jobs.append(Job("tune", arm, s, budget - n_done))
        final = self._optuna("final")
        finished = {(t.params.get("arm"), t.params.get("seed")) for t in final.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        for arm in self.arms:
            missing = [s for s in self.seeds if (arm.name, s) not in finished]
            done, total = done + len(self.seeds) - len(missing), total + len(self.seeds)
            if missing:
                jobs.append(Job("final", arm, final, len(missing)))
        return jobs, done, total

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        jobs, done, total = self.plan()
        label = f"study {self.study.name} ({self.profile})"
        if not jobs:
            print(f"{label} is complete: {done}/{total} trials finished; nothing to run. `bench report` reads them.")
            return 0
        print(f"{label}: {total - done} of {total} trials to run ({done} already finished); "
              f"arms: {', '.join(a.name for a in self.arms)}; seeds: {len(self.seeds)}")
        self.data = load_cifar10(self.data_dir)
        parent = self.tracker.start_run(
            f"{self.study.name} {self.profile} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            {"bench.study": self.study.name, "bench.profile": self.profile, "bench.kind": "study",
             "bench.claims": ",".join(self.study.claims), **worker_tags()},
            {"arms": ",".join(a.name for a in self.arms), "seeds": len(self.seeds), "study_file": self.study.path,
             "tuning": repr(self.study.tuning) if self.study.tuning_trials(self.profile) else "none",
             "tuning_trials_per_arm": self.study.tuning_trials(self.profile)})
        self.parent = parent
        self.bar = tqdm(total=total, initial=done, desc=self.study.name, unit="trial", disable=not self.progress,
                        dynamic_ncols=True, file=sys.stderr)
        status = "FINISHED"
        try:
            for job in jobs:
                if job.stage == "tune":
                    self._run_tuning(job)
            tuned = {a.name: self.tuned_value(a) for a in self.arms}
            if any(v is not None for v in tuned.values()):
                self.tracker.log_params(parent, {f"tuned_{self.study.tuning.param}.{k}": v for k, v in tuned.items()})
            for job in jobs:
                if job.stage == "final":
                    self._run_final(job, tuned[job.arm.name])
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self.bar.close()
            self.tracker.end_run(parent, status if not self.failures or status == "KILLED" else "FAILED")
        _, done, total = self.plan()
        print(f"{label}: {done}/{total} trials finished" + (f"; {len(self.failures)} failed and will be rerun next time:" if self.failures else ""))
        for line in self.failures:
            print(f"  {line}")
        return 1 if self.failures else 0

    def _run_tuning(self, job: Job) -> None:
        tuning = self.study.tuning
        for _ in range(job.remaining):
            trial = job.optuna_study.ask()
            value = trial.suggest_float(tuning.param, tuning.low, tuning.high, log=tuning.log)
            self._run_trial(job.optuna_study, trial, "tune", job.arm, tuning.seed, {tuning.param: value})

    def _run_final(self, job: Job, tuned: float | None) -> None:
        dists = {"arm": CategoricalDistribution([a.name for a in self.arms]), "seed": CategoricalDistribution(self.seeds)}
        finished = {(t.params.get("arm"), t.params.get("seed")) for t in job.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        for seed in self.seeds:
            if (job.arm.name, seed) in finished:
                continue
            job.optuna_study.enqueue_trial({"arm": job.arm.name, "seed": seed})
            trial = job.optuna_study.ask(dists)
            extra = {self.study.tuning.param: tuned} if tuned is not None else {}
            self._run_trial(job.optuna_study, trial, "final", job.arm, trial.params["seed"], extra)

    def _run_trial(self, ostudy: optuna.Study, trial: optuna.Trial, stage: str, arm: Arm, seed: int, extra: dict) -> None:
        """The thin objective: build the config, train, log, tell Optuna.

        Ctrl-C anywhere in here ends the MLflow run KILLED and the Optuna trial FAIL (rerun
        next time); any other error fails this trial only and the study goes on.
        """
        run_id = None
        try:
            cfg = self.study.config(self.profile, arm, seed, **extra)
            for key, value in worker_tags().items():
                trial.set_user_attr(key.split(".")[1], value)
            tags = {"bench.study": self.study.name, "bench.arm": arm.name, "bench.seed": str(seed),
                    "bench.claims": ",".join(self.study.claims), "bench.profile": self.profile, "bench.stage": stage,
                    "bench.optuna_trial": str(trial.number), **{f"bench.factor.{f}": a for f, a in arm.factors.items()},
                    **worker_tags()}
            if extra:
                tags.update({f"bench.tuned_{k}" if stage == "final" else f"bench.tune_{k}": str(v) for k, v in extra.items()})
            run_id = self.tracker.start_run(f"{stage} {arm.name} seed={seed}", tags, as_dict(cfg), parent=self.parent)
            trial.set_user_attr("mlflow_run_id", run_id)
            self.bar.set_postfix_str(f"{stage} {arm.name} seed={seed}")

            def on_epoch(epoch: int, m: dict) -> None:
                self.bar.set_postfix_str(f"{stage} {arm.name} seed={seed} epoch {epoch}/{cfg.epochs} val_acc {m.get('val_acc', 0):.3f}")

            record = train_trial(cfg, RunLogger(self.tracker, run_id, on_epoch), progress=False, data=self.data)
            self.tracker.log_dict(run_id, record, "record.json")
            self.tracker.set_tags(run_id, {"bench.status": record["status"], "bench.data_source": record["data_source"],
                                           "bench.device": record["device"], "bench.git_commit": record["git_commit"]})
            summary = {k: record[k] for k in ("epochs_run", "seconds", "train_seconds", "images_per_s", "best_val_acc")}
            self.tracker.log_metrics(run_id, {**summary, "diverged": float(record["status"] == "diverged")}, step=record["epochs_run"])
            trial.set_user_attr("status", record["status"])
        except KeyboardInterrupt:
            if run_id:
                self.tracker.set_tags(run_id, {"bench.status": "interrupted"})
                self.tracker.end_run(run_id, "KILLED")
            ostudy.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # a crash of one trial is recorded and the study goes on
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            if run_id:
                self.tracker.set_tags(run_id, {"bench.status": "failed", "bench.failure": reason})
                self.tracker.end_run(run_id, "FAILED")
            trial.set_user_attr("failure", reason)
            ostudy.tell(trial, state=TrialState.FAIL)
            self.failures.append(f"{stage} {arm.name} seed={seed}: {reason}")
            if os.environ.get("BENCH_DEBUG"):
                raise
            self.bar.update(1)
            return
        # Finish MLflow before Optuna: a kill in between leaves a FINISHED run whose trial is
        # rerun (a duplicate the report drops by trial), never a COMPLETE trial without its run.
        self.tracker.end_run(run_id, "FINISHED")
        ostudy.tell(trial, record["best_val_acc"] if record["status"] == "ok" else 0.0)
        self.bar.update(1)


def run_study_cli(args) -> int:
    study = get_study(args.name)
    if args.profile:
        profile, why = args.profile, "chosen with --profile"
    else:
        profile, why = default_profile()
    print(f"profile: {profile} ({why})", flush=True)
    uri = tracking_uri(args.tracking_uri)
    data_dir = args.data_dir or None
    return StudyRun(study, profile, args.storage, uri, data_dir, progress=not args.no_progress).run()
