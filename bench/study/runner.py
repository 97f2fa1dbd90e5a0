"""The study runner: Optuna sweeps (TPE tuning per arm, then arms x seeds final runs),
every trial logged to MLflow, resumable: finished trials are never repeated."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from tqdm import tqdm

from bench.config import as_dict
from bench.data import load_cifar10
from bench.engine.loop import pack_key, train_packed, train_trial

from .files import Arm, Study, StudyError, get_study
from .tracking import RunLogger, Tracker, redact, tracking_uri, worker_tags

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runner prints its own progress
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's constant_liar
DEFAULT_JOURNAL = "optuna/studies.journal"  # under the working directory (the project root via make)


def default_profile() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "full", f"CUDA device found ({torch.cuda.get_device_name(0)})"
    return "quick", "no CUDA device found; the full profile is meant for a GPU"


def open_storage(url: str | None) -> Any:
    """An Optuna storage: the URL given (sqlite:///, postgresql://, ...) or the default journal file."""
    if url:
        for attempt in range(4):
            try:
                return optuna.storages.get_storage(url)
            except ImportError as exc:
                raise StudyError(
                    f"cannot open Optuna storage {redact(url)}: {exc} (for PostgreSQL: pip install 'psycopg[binary]')"
                ) from None
            except Exception as exc:  # workers starting together on a new database race to create its tables
                if attempt == 3 or "connection" in str(exc).lower():
                    raise StudyError(
                        f"cannot open Optuna storage {redact(url)}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    ) from None
                time.sleep(1.0 + attempt)
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
    return False


def fail_stale(study: optuna.Study) -> int:
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(t.user_attrs.get("host"), str(t.user_attrs.get("pid", ""))):
            study.tell(t.number, state=TrialState.FAIL)
            n += 1
    return n


def default_pack() -> int:
    """Trials trained together per process when --pack is not given: on a GPU one small trial
    leaves most of the device idle; on a CPU packing gains little (see `bench speed`)."""
    return 8 if torch.cuda.is_available() else 1


def tuned_param_key(param: str, arm: str) -> str:
    """MLflow param name of an arm's tuned value; "+" (joining factor levels) is not allowed there."""
    return f"tuned_{param}.{arm.replace('+', '/')}"


def _key(trial: optuna.trial.FrozenTrial) -> tuple:
    """(arm, seed) of a final-stage trial; an enqueued (WAITING) one has them only as fixed params."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    return params.get("arm"), params.get("seed")


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
    ):
        self.study, self.profile, self.progress, self.pack = study, profile, progress, max(1, pack)
        self.storage_url, self.workers, self.parent, self.threads = storage_url, workers, parent, threads
        self.storage = open_storage(storage_url)
        self.tracker = Tracker(uri, study.name)  # creates the experiment before any trial starts
        self.tracker.end_stale_runs(is_stale)  # runs left RUNNING by a killed worker on this host
        self.data_dir = data_dir
        self.arms = study.arms(profile)
        self.seeds = study.seeds(profile)
        self.failures: list[str] = []
        self.failed_keys: set[tuple] = set()  # final (arm, seed) that failed in this execution: rerun next time
        self.failed_arms: set[str] = set()  # arms whose tuning crashed in this execution
        self.device_is_cuda = torch.cuda.is_available()

    # ------------------------------------------------------------------ planning
    def _optuna(self, suffix: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        name = f"{self.study.name}/{self.profile}/{suffix}"
        s = optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True, direction="maximize", sampler=sampler)
        fail_stale(s)
        return s

    def _tune_study(self, arm: Arm) -> optuna.Study:
        # constant_liar: trials running in parallel (packed or other workers) get distinct suggestions
        return self._optuna(f"tune/{arm.name}", optuna.samplers.TPESampler(seed=0, n_startup_trials=3, constant_liar=True))

    def tuned_value(self, arm: Arm) -> float | None:
        if self.study.tuning is None or self.study.tuning_trials(self.profile) == 0:
            return None
        done = [t for t in self._tune_study(arm).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not done:
            return None
        return max(done, key=lambda t: t.value).params[self.study.tuning.param]

    def plan(self) -> tuple[int, int]:
        """(trials finished, trials in total) as the stores say now."""
        done, total = 0, 0
        budget = self.study.tuning_trials(self.profile)
        if budget:
            for arm in self.arms:
                n_done = len(self._tune_study(arm).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                done, total = done + min(n_done, budget), total + budget
        finished = {_key(t) for t in self._optuna("final").get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        wanted = {(a.name, s) for a in self.arms for s in self.seeds}
        return done + len(wanted & finished), total + len(wanted)

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        done, total = self.plan()
        label = f"study {self.study.name} ({self.profile})"
        if done == total:
            self._run_extras()
            print(f"{label} is complete: {done}/{total} trials finished; nothing to run. `bench report` reads them.")
            return 0
        print(
            f"{label}: {total - done} of {total} trials to run ({done} already finished); "
            f"arms: {', '.join(a.name for a in self.arms)}; seeds: {len(self.seeds)}"
            + (f"; up to {self.pack} trials of one architecture train packed in each process" if self.pack > 1 else ""),
            flush=True,
        )
        self.data = load_cifar10(self.data_dir)
        own_parent = self.parent is None
        if own_parent:
            self.parent = self.tracker.start_run(
                f"{self.study.name} {self.profile} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                {
                    "bench.study": self.study.name,
                    "bench.profile": self.profile,
                    "bench.kind": "study",
                    "bench.claims": ",".join(self.study.claims),
                    **worker_tags(),
                },
                {
                    "arms": ",".join(a.name for a in self.arms),
                    "seeds": len(self.seeds),
                    "study_file": self.study.path,
                    "tuning": repr(self.study.tuning) if self.study.tuning_trials(self.profile) else "none",
                    "tuning_trials_per_arm": self.study.tuning_trials(self.profile),
                },
            )
        workers = self._spawn_workers() if self.workers > 1 else []
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=self.study.name,
            unit="trial",
            disable=not self.progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        status = "FINISHED"
        try:
            self._tune_all()
            tuned = {a.name: self.tuned_value(a) for a in self.arms}
            if own_parent and any(v is not None for v in tuned.values()):
                self.tracker.log_params(self.parent, {tuned_param_key(self.study.tuning.param, k): v for k, v in tuned.items()})
            self._final_all(tuned)
            for proc in workers:
                if proc.wait() != 0:
                    self.failures.append(f"worker process {proc.pid} exited with status {proc.returncode}")
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.wait()
            self.bar.close()
            if own_parent:
                self.tracker.end_run(self.parent, status if not self.failures or status == "KILLED" else "FAILED")
        if own_parent:
            self._run_extras()
        done, total = self.plan()
        print(
            f"{label}: {done}/{total} trials finished"
            + (f"; {len(self.failures)} failed and will be rerun next time:" if self.failures else "")
        )
        for line in self.failures:
            print(f"  {line}")
        return 1 if self.failures else 0

    def _run_extras(self) -> None:
        """Each of the study's extras once (a finished extra run is not repeated)."""
        from .extras import EXTRAS

        for name in self.study.extras:
            query = f"tags.`bench.kind` = 'extra' AND tags.`bench.extra` = '{name}' AND attributes.status = 'FINISHED'"
            if self.tracker.client.search_runs([self.tracker.experiment_id], query, max_results=1):
                continue
            print(f"extra {name}: {EXTRAS.help(name)}", flush=True)
            run_id = self.tracker.start_run(
                f"extra {name}",
                {
                    "bench.study": self.study.name,
                    "bench.kind": "extra",
                    "bench.extra": name,
                    "bench.profile": self.profile,
                    **worker_tags(),
                },
            )
            try:
                self.tracker.log_dict(run_id, EXTRAS.get(name)(), f"{name}.json")
            except BaseException:
                self.tracker.end_run(run_id, "FAILED")
                raise
            self.tracker.end_run(run_id, "FINISHED")

    def _spawn_workers(self) -> list[subprocess.Popen]:
        """Start workers-1 more processes on the same stores and parent run; this one is worker 1."""
        cmd = [
            sys.executable,
            "-m",
            "bench",
            "study",
            self.study.name,
            "--profile",
            self.profile,
            "--no-progress",
            "--tracking-uri",
            self.tracker.uri,
            "--parent-run",
            self.parent,
            "--threads",
            str(self.threads),
            "--pack",
            str(self.pack),
        ]
        if self.storage_url:
            cmd += ["--storage", self.storage_url]
        if self.data_dir:
            cmd += ["--data-dir", self.data_dir]
        env = {**os.environ, "BENCH_STUDIES_DIR": str(Path(self.study.path).parent)}
        return [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(self.workers - 1)]

    def _refresh_bar(self) -> None:
        if self.bar.disable:
            return
        self.bar.n = self.plan()[0]  # counts every worker's trials, not only ours
        self.bar.refresh()

    def _tune_all(self) -> None:
        """Run tuning trials until every arm has its budget; with several workers, wait for
        the others' tuning trials before the final stage needs the tuned values."""
        budget, tuning = self.study.tuning_trials(self.profile), self.study.tuning
        while budget:
            waiting_on_others = False
            for arm in self.arms:
                if arm.name in self.failed_arms:
                    continue
                ostudy = self._tune_study(arm)
                while True:
                    trials = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                    complete = sum(t.state == TrialState.COMPLETE for t in trials)
                    if len(trials) >= budget:
                        waiting_on_others |= complete < budget
                        break
                    items = []
                    for _ in range(min(self.pack, budget - len(trials))):
                        trial = self._ask(ostudy)
                        if len(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))) > budget:
                            ostudy.tell(trial, state=TrialState.PRUNED)  # another worker took the last slot
                            break
                        value = trial.suggest_float(tuning.param, tuning.low, tuning.high, log=tuning.log)
                        items.append((trial, arm, tuning.seed, {tuning.param: value}))
                    if items and not all(self._run_group(ostudy, "tune", items)):
                        self.failed_arms.add(arm.name)
                        break
            if not waiting_on_others:
                return
            time.sleep(2.0)

    def _final_all(self, tuned: dict[str, float | None]) -> None:
        """Arms x seeds as enqueued Optuna trials, shared by every worker; each (arm, seed)
        finishes exactly once: a worker that pops one already running or done elsewhere skips it."""
        ostudy = self._optuna("final")
        by_name = {a.name: a for a in self.arms}
        dists = {"arm": CategoricalDistribution(list(by_name)), "seed": CategoricalDistribution(self.seeds)}
        while True:
            trials = ostudy.get_trials(deepcopy=False)
            taken = {_key(t) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)}
            todo = [
                (a.name, s)
                for a in self.arms
                for s in self.seeds
                if (a.name, s) not in taken and (a.name, s) not in self.failed_keys
            ]
            for name, seed in todo:
                ostudy.enqueue_trial({"arm": name, "seed": seed})
            if not todo and not any(t.state == TrialState.WAITING for t in trials):
                return
            items = []  # up to --pack claimed trials, trained together where their configs allow
            while len(items) < self.pack:
                if items and not ostudy.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    break
                item = self._claim_final(ostudy, dists, by_name, tuned)
                if item is None:  # pruned or failed: back to the top, which sees whether anything is left
                    break
                items.append(item)
            for item, ok in zip(items, self._run_group(ostudy, "final", items)):
                if not ok:
                    self.failed_keys.add((item[1].name, item[2]))

    @staticmethod
    def _ask(ostudy: optuna.Study, dists: dict | None = None) -> optuna.Trial:
        """ostudy.ask(), with this worker's host and pid recorded at once: a claimed trial whose
        process dies before it starts is still recognised as stale (fail_stale) and rerun."""
        trial = ostudy.ask(dists)
        for key, value in worker_tags().items():
            trial.set_user_attr(key.split(".")[1], value)
        return trial

    def _claim_final(
        self, ostudy: optuna.Study, dists: dict, by_name: dict[str, Arm], tuned: dict[str, float | None]
    ) -> tuple | None:
        """Pop the next enqueued (arm, seed): (trial, arm, seed, extra), or None when it is done
        or being done elsewhere (pruned) or cannot run (failed)."""
        trial = self._ask(ostudy, dists)
        key = (trial.params["arm"], trial.params["seed"])
        others = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if key in self.failed_keys or any(_key(t) == key and t.number != trial.number for t in others):
            ostudy.tell(trial, state=TrialState.PRUNED)  # done or being done by another worker
            return None
        arm = by_name[key[0]]
        if self.study.tuning_trials(self.profile) and tuned.get(arm.name) is None:
            ostudy.tell(trial, state=TrialState.FAIL)
            self.failed_keys.add(key)
            self.failures.append(f"final {arm.name} seed={key[1]}: no finished tuning trial for this arm")
            return None
        extra = {self.study.tuning.param: tuned[arm.name]} if tuned.get(arm.name) is not None else {}
        return trial, arm, key[1], extra

    def _run_group(self, ostudy: optuna.Study, stage: str, items: list[tuple]) -> list[bool]:
        """Train claimed trials, packed where their configs share an architecture (pack_key);
        one bool per item: True when it finished."""
        groups: dict[Any, list[int]] = {}
        for i, (_trial, arm, seed, extra) in enumerate(items):
            key = pack_key(self.study.config(self.profile, arm, seed, **extra))
            groups.setdefault(("alone", i) if key is None else key, []).append(i)
        ok = [False] * len(items)
        try:
            for members in groups.values():
                if len(members) == 1:
                    i = members[0]
                    ok[i] = self._run_trial(ostudy, items[i][0], stage, *items[i][1:])
                else:
                    for i, result in zip(members, self._run_packed(ostudy, stage, [items[i] for i in members])):
                        ok[i] = result
        except BaseException:  # Ctrl-C in one group: the claimed trials of the others are failed too (rerun next time)
            running = {t.number for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            for trial, *_ in items:
                if trial.number in running:
                    ostudy.tell(trial, state=TrialState.FAIL)
            raise
        return ok

    def _start_run(
        self,
        trial: optuna.Trial,
        stage: str,
        arm: Arm,
        seed: int,
        extra: dict,
        cfg,
        packed: int = 1,
        more_tags: dict | None = None,
    ) -> tuple[str, dict]:
        """Open the trial's MLflow run (child of the study run); (run id, its tags)."""
        for key, value in worker_tags().items():
            trial.set_user_attr(key.split(".")[1], value)
        tags = {
            "bench.study": self.study.name,
            "bench.arm": arm.name,
            "bench.seed": str(seed),
            "bench.claims": ",".join(self.study.claims),
            "bench.profile": self.profile,
            "bench.stage": stage,
            "bench.optuna_trial": str(trial.number),
            **{f"bench.factor.{f}": a for f, a in arm.factors.items()},
            **worker_tags(),
        }
        if extra:
            tags.update({f"bench.tuned_{k}" if stage == "final" else f"bench.tune_{k}": str(v) for k, v in extra.items()})
        if packed > 1:
            tags["bench.packed"] = str(packed)  # trained together with packed-1 others
        tags.update(more_tags or {})
        run_id = self.tracker.start_run(f"{stage} {arm.name} seed={seed}", tags, as_dict(cfg), parent=self.parent)
        trial.set_user_attr("mlflow_run_id", run_id)
        return run_id, tags

    def _log_record(self, run_id: str, trial: optuna.Trial, record: dict) -> None:
        self.tracker.log_dict(run_id, record, "record.json")
        self.tracker.set_tags(
            run_id,
            {
                "bench.status": record["status"],
                "bench.data_source": record["data_source"],
                "bench.device": record["device"],
                "bench.git_commit": record["git_commit"],
            },
        )
        summary = {k: record[k] for k in ("epochs_run", "seconds", "train_seconds", "images_per_s", "best_val_acc")}
        self.tracker.log_metrics(
            run_id, {**summary, "diverged": float(record["status"] == "diverged")}, step=record["epochs_run"]
        )
        trial.set_user_attr("status", record["status"])

    def _finish(self, ostudy: optuna.Study, trial: optuna.Trial, run_id: str, record: dict) -> None:
        # Finish MLflow before Optuna: a kill in between leaves a FINISHED run whose trial is
        # rerun (a duplicate the report drops by trial), never a COMPLETE trial without its run.
        self.tracker.end_run(run_id, "FINISHED")
        ostudy.tell(trial, record["best_val_acc"] if record["status"] == "ok" else 0.0)

    def _fail(self, ostudy: optuna.Study, trial: optuna.Trial, stage: str, arm: Arm, seed: int, reason: str) -> None:
        trial.set_user_attr("failure", reason)
        ostudy.tell(trial, state=TrialState.FAIL)
        self.failures.append(f"{stage} {arm.name} seed={seed}: {reason}")

    def _interrupted(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self.tracker.set_tags(run_id, {"bench.status": "interrupted"})
            self.tracker.end_run(run_id, "KILLED")

    def _failed_runs(self, run_ids: list[str], reason: str) -> None:
        for run_id in run_ids:
            self.tracker.set_tags(run_id, {"bench.status": "failed", "bench.failure": reason})
            self.tracker.end_run(run_id, "FAILED")

    def _run_trial(self, ostudy: optuna.Study, trial: optuna.Trial, stage: str, arm: Arm, seed: int, extra: dict) -> bool:
        """The thin objective: build the config, train, log, tell Optuna; True when it finished.

        Ctrl-C anywhere in here ends the MLflow run KILLED and the Optuna trial FAIL (rerun
        next time); any other error fails this trial only and the study goes on. Running out
        of device memory fails the MLflow run with the reason and, where the study allows it,
        retries once at half the batch size under the same Optuna trial.
        """
        cfg = self.study.config(self.profile, arm, seed, **extra)
        retry_allowed, more_tags = self.study.oom_retry, {}
        while True:
            run_id = None
            try:
                run_id, tags = self._start_run(trial, stage, arm, seed, extra, cfg, more_tags=more_tags)
                self.bar.set_postfix_str(f"{stage} {arm.name} seed={seed}")

                def on_epoch(epoch: int, m: dict, cfg=cfg) -> None:
                    self.bar.set_postfix_str(
                        f"{stage} {arm.name} seed={seed} epoch {epoch}/{cfg.epochs} val_acc {m.get('val_acc', 0):.3f}"
                    )

                record = train_trial(cfg, RunLogger(self.tracker, run_id, on_epoch), progress=False, data=self.data)
                self._log_record(run_id, trial, record)
                break
            except KeyboardInterrupt:
                self._interrupted([run_id] if run_id else [])
                ostudy.tell(trial, state=TrialState.FAIL)
                raise
            except Exception as exc:  # a crash of one trial is recorded and the study goes on
                reason = _reason(exc)
                self._failed_runs([run_id] if run_id else [], reason)
                if isinstance(exc, torch.OutOfMemoryError) and retry_allowed and cfg.batch_size > 1:
                    retry_allowed = False
                    cfg = replace(cfg, batch_size=cfg.batch_size // 2)
                    more_tags = {"bench.oom_retry": f"batch_size halved to {cfg.batch_size} after: {reason}"}
                    trial.set_user_attr("oom_retry", cfg.batch_size)
                    if self.device_is_cuda:
                        torch.cuda.empty_cache()
                    continue
                self._fail(ostudy, trial, stage, arm, seed, reason)
                if os.environ.get("BENCH_DEBUG"):
                    raise
                return False
        self._finish(ostudy, trial, run_id, record)
        self._refresh_bar()
        return True

    def _run_packed(self, ostudy: optuna.Study, stage: str, items: list[tuple]) -> list[bool]:
        """Train several claimed trials of one architecture together (bench.train.train_packed).

        Ctrl-C: every run KILLED and every trial FAIL. Out of device memory: the runs are
        failed with the reason and each trial is retried alone (with its own OOM retry). Any
        other error fails all of them and the study goes on.
        """
        cfgs = [self.study.config(self.profile, arm, seed, **extra) for _, arm, seed, extra in items]
        label = f"{stage} {items[0][1].name} seed={items[0][2]} +{len(items) - 1} packed"
        run_ids: list[str] = []
        out_of_memory = False
        try:
            for (trial, arm, seed, extra), cfg in zip(items, cfgs):
                run_ids.append(self._start_run(trial, stage, arm, seed, extra, cfg, packed=len(items))[0])
            self.bar.set_postfix_str(label)

            def on_epoch(epoch: int, m: dict) -> None:
                self.bar.set_postfix_str(f"{label} epoch {epoch}/{cfgs[0].epochs} val_acc {m.get('val_acc', 0):.3f}")

            loggers = [RunLogger(self.tracker, run_id, on_epoch) for run_id in run_ids]
            records = train_packed(cfgs, loggers, progress=False, data=self.data)
            for run_id, (trial, *_), record in zip(run_ids, items, records):
                self._log_record(run_id, trial, record)
        except KeyboardInterrupt:
            self._interrupted(run_ids)
            for trial, *_ in items:
                ostudy.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:
            reason = _reason(exc)
            self._failed_runs(run_ids, f"packed x{len(items)}: {reason}")
            out_of_memory = isinstance(exc, torch.OutOfMemoryError)
            if not out_of_memory:
                for trial, arm, seed, _ in items:
                    self._fail(ostudy, trial, stage, arm, seed, f"packed x{len(items)}: {reason}")
                if os.environ.get("BENCH_DEBUG"):
                    raise
                return [False] * len(items)
        if out_of_memory:  # outside the except block, so the failed pack's frames (and memory) are gone
            import gc

            gc.collect()
            if self.device_is_cuda:
                torch.cuda.empty_cache()
            return [self._run_trial(ostudy, trial, stage, arm, seed, extra) for trial, arm, seed, extra in items]
        for run_id, (trial, *_), record in zip(run_ids, items, records):
            self._finish(ostudy, trial, run_id, record)
        self._refresh_bar()
        return [True] * len(items)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def run_study_cli(args) -> int:
    study = get_study(args.name)
    if args.profile:
        profile, why = args.profile, "chosen with --profile"
    else:
        profile, why = default_profile()
    print(f"profile: {profile} ({why})", flush=True)
    if args.workers < 1:
        raise StudyError("--workers must be >= 1")
    if args.pack < 0:
        raise StudyError("--pack must be >= 1 (0 = the default for this device)")
    pack = (args.pack or default_pack()) if study.packable else 1
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    torch_threads(threads)
    uri = tracking_uri(args.tracking_uri)
    run = StudyRun(
        study,
        profile,
        args.storage,
        uri,
        args.data_dir or None,
        progress=not args.no_progress,
        workers=args.workers,
        parent=args.parent_run,
        threads=threads,
        pack=pack,
    )
    return run.run()


def torch_threads(n: int) -> None:
    """Share the CPU cores among the worker processes instead of oversubscribing them."""
    import torch

    torch.set_num_threads(n)
