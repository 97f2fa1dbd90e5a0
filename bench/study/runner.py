"""One execution of `bench study`: the stores opened, the scheduler's claims handed to the executor, extras run once.

Resumable: finished trials are never repeated. Also the command line: --pack/--workers auto and path checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from bench import STARTED
from bench.data import load_cifar10

from . import tracking as tags
from .deadline import Deadline, TimeBudgetReached, claim_estimates
from .executor import Executor
from .files import Study, StudyError, get_study, studies_dir
from .liveness import DEFAULT_GRACE, WORKER_TOKEN, hostname, local_gone
from .plan import default_profile
from .progress import Progress
from .scheduler import FAILURE, RUN_ID, Scheduler
from .stores import StoreError, check_artifact_folder, one_line, open_storage, retry_seconds, transient
from .tracking import Tracker, tracking_uri


def tuned_param_key(param: str, arm: str) -> str:
    """MLflow param name of an arm's tuned value; "+" (joining factor levels) is not allowed there."""
    return f"tuned_{param}.{arm.replace('+', '/')}"


class StudyRun:
    """One execution of `bench study`: plans the remaining trials and runs them."""

    def __init__(
        self,
        study: Study,
        profile: str,
        storage_url: str | None,
        uri: str,
        data_dir: str | None,
        progress: bool = True,
        workers: int = 1,
        parent: str | None = None,
        threads: int = 0,
        pack: int = 1,
        grace: float = DEFAULT_GRACE,
        deadline: float | None = None,
        system_metrics: bool = False,
    ):
        self.system_metrics = system_metrics  # --system-metrics: MLflow's system metrics on each trial run
        self.study, self.profile, self.progress, self.pack = study, profile, progress, max(1, pack)
        self.storage_url, self.workers, self.parent, self.threads, self.grace = storage_url, workers, parent, threads, grace
        self.data_dir = data_dir
        self.storage = open_storage(storage_url)
        self.tracker = Tracker(uri, study.name)  # creates the experiment before any trial starts
        check_artifact_folder(self.tracker.client.get_experiment(self.tracker.experiment_id).artifact_location)
        self.scheduler = Scheduler(study, profile, self.storage, grace, on_dead=self._worker_dead)
        self.arms = self.scheduler.arms
        self.deadline = Deadline(deadline)
        if deadline is not None:  # what --plan says each claim takes decides what may still start
            kind = "cuda" if torch.cuda.is_available() else "cpu"
            self.deadline.estimates = claim_estimates(study, profile, kind, self.pack, max(1, workers))
            self.scheduler.admit, self.scheduler.timed = self.deadline.admits, True
        self.end_orphan_runs()  # runs left RUNNING by a worker that died (on this host, or judged by heartbeat)

    # ------------------------------------------------------------------ runs whose worker is gone
    def _worker_dead(self, host: str, pid: str, token: str | None, reason: str) -> None:
        self.tracker.end_runs_of_worker(host, pid, token, reason)

    def end_orphan_runs(self) -> int:
        """End FAILED every RUNNING run of this study whose Optuna trial has ended (its worker died, or a
        retried request opened it twice), or whose worker's process is gone from this host."""
        n = 0
        for run in self.tracker.running_runs():
            t = run.data.tags
            reason = None
            if t.get(tags.OPTUNA_STUDY) and t.get(tags.OPTUNA_TRIAL, "").isdigit():
                trial = self._trial(t[tags.OPTUNA_STUDY], int(t[tags.OPTUNA_TRIAL]))
                if trial is not None and trial.state.is_finished():
                    reason = trial.user_attrs.get(FAILURE) or f"its Optuna trial ended {trial.state.name} without this run"
                elif trial is not None and trial.user_attrs.get(RUN_ID) not in (None, run.info.run_id):
                    reason = None  # an earlier attempt of a trial that is still running: ended when it ends
            if reason is None and t.get(tags.HOST) == hostname() and t.get(tags.PID, "").isdigit():
                reason = local_gone(t[tags.HOST], t[tags.PID], t.get(tags.TOKEN))
            if reason:
                self.tracker.fail_run(run.info.run_id, reason)
                n += 1
        return n

    def _trial(self, optuna_study: str, number: int):
        try:
            study_id = self.storage.get_study_id_from_name(optuna_study)
            return self.storage.get_trial(self.storage.get_trial_id_from_study_id_trial_number(study_id, number))
        except KeyError:
            return None

    # ------------------------------------------------------------------ running
    def plan(self) -> tuple[int, int]:
        """(trials finished, trials in total) as the stores say now."""
        return self.scheduler.plan()

    def run(self) -> int:
        try:
            return self._run()
        except Exception as exc:
            if not transient(exc):
                raise
            raise StoreError(  # each call was retried for the whole budget: say so in one line
                f"a store stayed unreachable for longer than the retry budget ({retry_seconds():.0f} s, "
                f"BENCH_STORE_RETRY_SECONDS): {one_line(exc)}; run the same command again to resume"
            ) from None
        finally:
            self.scheduler.close()

    def _run(self) -> int:
        done, total = self.plan()
        label = f"study {self.study.name} ({self.profile})"
        if done == total:
            self._run_extras()
            print(f"{label} is complete: {done}/{total} trials finished; nothing to run. `bench report` reads them.")
            return 0
        print(
            f"{label}: {total - done} of {total} trials to run ({done} already finished); "
            f"arms: {', '.join(a.name for a in self.arms)}; seeds: {len(self.scheduler.seeds)}"
            + (f"; up to {self.pack} trials of one architecture train packed in each process" if self.pack > 1 else ""),
            flush=True,
        )
        data = load_cifar10(self.data_dir)
        self.check_data(data)
        own_parent = self.parent is None
        if own_parent:
            self.parent = self._start_parent()
        workers = self._spawn_workers() if self.workers > 1 else []
        progress = Progress(total, done, self.study.name, enabled=self.progress)
        execute = Executor(self.scheduler, self.tracker, data, self.parent, progress, self.deadline, self.system_metrics)
        status = "FAILED"
        stopped = 0  # trials stopped mid-run at the deadline
        try:
            self.scheduler.run_tuning(self.pack, execute)
            tuned = self.scheduler.tuned_values()
            if own_parent and any(v is not None for v in tuned.values()):
                self.tracker.log_params(self.parent, {tuned_param_key(self.study.tuning.param, k): v for k, v in tuned.items()})
            self.scheduler.run_final(self.pack, tuned, execute)
            for proc in workers:
                if proc.wait() != 0:
                    self.scheduler.failures.append(f"worker process {proc.pid} exited with status {proc.returncode}")
            status = "FAILED" if self.scheduler.failures else "FINISHED"
        except TimeBudgetReached:
            status, stopped = "KILLED", execute.stopped
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.wait()
            progress.close()
            if own_parent:
                try:
                    self.tracker.end_run(self.parent, status)
                except Exception:  # the store is what failed (a full disk): the next execution ends it
                    pass
        self.end_orphan_runs()
        timed_out = self.deadline.reached or bool(self.deadline.deferred)
        if own_parent and not timed_out:
            self._run_extras()
        done, total = self.plan()
        failures = self.scheduler.failures
        if timed_out and done < total:
            print(
                f"{label}: time budget reached: {done} of {total} trials finished, {total - done} left"
                + (f" ({stopped} stopped mid-run: rerun next time)" if stopped else "")
                + (f"; {len(failures)} failed" if failures else "")
                + f"; continue with: {self.continue_command()}",
                flush=True,
            )
            return 1 if failures else 0
        print(
            f"{label}: {done}/{total} trials finished"
            + (f"; {len(failures)} failed and will be rerun next time:" if failures else "")
        )
        for line in failures:
            print(f"  {line}")
        return 1 if failures else 0

    def continue_command(self) -> str:
        """The command that goes on from where this execution stopped."""
        shipped = Path(self.study.path).resolve().parent == studies_dir().resolve()
        return f"bench study {self.study.name if shipped else self.study.path} --profile {self.profile} [--time-budget SECONDS]"

    def check_data(self, data) -> None:
        """The study's runs in this store were measured on one data set: refuse to go on with another."""
        digests = self.tracker.data_digests(self.profile)
        if digests and set(digests) != {data.digest}:
            theirs = ", ".join(f"{src} (data {d})" for d, src in sorted(digests.items()))
            raise StudyError(
                f"study {self.study.name} ({self.profile}) in this store was measured on {theirs}; the data here is "
                f"{data.source} (data {data.digest}) at {data.path}: point --data-dir at that data, or use another store"
            )

    def _start_parent(self) -> str:
        return self.tracker.start_run(
            f"{self.study.name} {self.profile} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            {
                tags.STUDY: self.study.name,
                tags.PROFILE: self.profile,
                tags.KIND: "study",
                tags.CLAIMS: ",".join(self.study.claims),
                tags.HOST: hostname(),
                tags.PID: str(os.getpid()),
                tags.TOKEN: WORKER_TOKEN,
            },
            {
                "arms": ",".join(a.name for a in self.arms),
                "seeds": len(self.scheduler.seeds),
                "study_file": self.study.path,
                "tuning": repr(self.study.tuning) if self.study.tuning_trials(self.profile) else "none",
                "tuning_trials_per_arm": self.study.tuning_trials(self.profile),
            },
        )

    def _run_extras(self) -> None:
        """Each of the study's extras once (a finished extra run is not repeated)."""
        from .extras import EXTRAS

        for name in self.study.extras:
            if self.tracker.find_finished({tags.KIND: "extra", tags.EXTRA: name}):
                continue
            print(f"extra {name}: {EXTRAS.help(name)}", flush=True)
            run_id = self.tracker.start_run(
                f"extra {name}",
                {
                    tags.STUDY: self.study.name,
                    tags.KIND: "extra",
                    tags.EXTRA: name,
                    tags.PROFILE: self.profile,
                    tags.HOST: hostname(),
                    tags.PID: str(os.getpid()),
                    tags.TOKEN: WORKER_TOKEN,
                },
            )
            try:
                self.tracker.log_dict(run_id, EXTRAS.get(name)(), f"{name}.json")
            except BaseException:
                self.tracker.end_run(run_id, "FAILED")
                raise
            self.tracker.end_run(run_id, "FINISHED")

    def _spawn_workers(self) -> list[subprocess.Popen]:
        """Start workers-1 more processes on the same stores and parent run; this one is worker 1. The
        storage URL and tracking URI travel in the environment, not on a command line `ps` shows."""
        cmd = [
            sys.executable,
            "-m",
            "bench",
            "study",
            str(Path(self.study.path).resolve()),  # the same study file, wherever it lives
            "--profile",
            self.profile,
            "--no-progress",
            "--parent-run",
            self.parent,
            "--threads",
            str(self.threads),
            "--pack",
            str(self.pack),
            "--workers",
            "1",
            "--grace-period",
            str(self.grace),
        ]
        if self.data_dir:
            cmd += ["--data-dir", self.data_dir]
        if self.deadline.at is not None:
            cmd += ["--deadline", repr(self.deadline.at)]
        if self.system_metrics:
            cmd += ["--system-metrics"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.tracker.uri}
        if self.storage_url:
            env["BENCH_STORAGE"] = self.storage_url
        return [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(self.workers - 1)]


# ---------------------------------------------------------------------- the command line
def concurrency(study: Study, profile: str, pack: str, workers: str, device_type: str) -> tuple[int, int, str]:
    """(--pack, --workers) as integers: each "auto" asks bench.perf.concurrency for the study's most common
    model on this device; a study with packable = false trains every trial alone."""
    from bench.perf.concurrency import default_concurrency

    models = Counter(study.config(profile, arm, 0).model for arm in study.arms(profile))
    model = models.most_common(1)[0][0]
    auto_pack, auto_workers, why = default_concurrency(model, device_type)
    chosen = []
    for flag, value, default in (("--pack", pack, auto_pack), ("--workers", workers, auto_workers)):
        if value == "auto":
            chosen.append(default)
        elif str(value).isdigit() and int(value) >= 1:
            chosen.append(int(value))
        else:
            raise StudyError(f"{flag}: expected auto or an integer >= 1, got {value!r}")
    reasons = [why] if "auto" in (pack, workers) else ["chosen with --pack/--workers"]
    if not study.packable and chosen[0] > 1:
        chosen[0] = 1
        reasons.append(f"study {study.name} trains every trial alone (packable = false)")
    return chosen[0], chosen[1], "; ".join(reasons)


def check_paths(data_dir: str | None) -> None:
    """The folders a study reads and writes besides its stores, checked before any work: one line, exit 2."""
    from bench.data.cache import cache_dir
    from bench.paths import PathError, writable_dir

    folder = Path(data_dir or os.environ.get("BENCH_DATA_DIR") or "./data").expanduser()
    what = "--data-dir" if data_dir else ("BENCH_DATA_DIR" if os.environ.get("BENCH_DATA_DIR") else "the data folder ./data")
    if folder.is_dir() and any(folder.iterdir()):
        if not os.access(folder, os.R_OK | os.X_OK):
            raise PathError(f"{what}: cannot read {folder}")
    elif folder.exists() and not folder.is_dir():
        raise PathError(f"{what}: {folder} is not a folder")
    else:  # empty or missing: CIFAR-10 is downloaded into it
        writable_dir(folder, f"{what} (CIFAR-10 is downloaded there when missing)")
    writable_dir(cache_dir(), "BENCH_CACHE_DIR (the decoded-image cache)")


def run_study_cli(args) -> int:
    study = get_study(args.name)
    if args.profile:
        profile, why = args.profile, "chosen with --profile"
    else:
        profile, why = default_profile()
    print(f"profile: {profile} ({why})", flush=True)
    args.profile = profile  # what --export exports
    if args.grace_period <= 0:
        raise StudyError("--grace-period must be a number of seconds > 0")
    if args.time_budget is not None and args.time_budget <= 0:
        raise StudyError("--time-budget must be a number of seconds > 0")
    deadline = args.deadline or (STARTED + args.time_budget if args.time_budget else None)  # from the command's start
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    pack, workers, why = concurrency(study, profile, args.pack, args.workers, device_type)
    if args.parent_run is None:  # a spawned worker says nothing its parent already said
        print(f"concurrency: {pack} trial(s) packed per process, {workers} worker process(es) ({why})", flush=True)
    check_paths(args.data_dir)
    threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
    torch_threads(threads)
    run = StudyRun(
        study,
        profile,
        args.storage or os.environ.get("BENCH_STORAGE") or None,
        tracking_uri(args.tracking_uri),
        args.data_dir or None,
        progress=not args.no_progress,
        workers=workers,
        parent=args.parent_run,
        threads=threads,
        pack=pack,
        grace=args.grace_period,
        deadline=deadline,
        system_metrics=args.system_metrics,
    )
    return run.run()


def torch_threads(n: int) -> None:
    """Share the CPU cores among the worker processes instead of oversubscribing them."""
    torch.set_num_threads(n)
