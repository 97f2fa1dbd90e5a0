"""Running claimed trials: one path for 1..k trials and one out-of-memory ladder.

Start their MLflow runs, train them through train_packed, then finish, fail or interrupt them. Out of device
memory: a pack retries its trials alone; a lone trial retries once at half the batch size where the study allows.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import replace
from typing import Any

import torch

from bench.config import TrialConfig, as_dict
from bench.engine.loop import pack_key, train_packed

from . import tracking as tags
from .deadline import Deadline, TimeBudgetReached, ctrl_c_after
from .liveness import WORKER_TOKEN, hostname
from .progress import Progress, trial_line
from .scheduler import JUDGED_DEAD, OOM_RETRY, STATUS, Claim, Scheduler, objective
from .stores import DiskFullError
from .tracking import RunLogger, Tracker


def reason_of(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


class Executor:
    """Trains what the scheduler claims and records it: MLflow runs through the tracker, results through
    the scheduler, progress through `progress`."""

    def __init__(
        self,
        scheduler: Scheduler,
        tracker: Tracker,
        data: Any,
        parent: str | None,
        progress: Progress,
        deadline: Deadline | None = None,
        system_metrics: bool = False,
    ):
        self.scheduler, self.tracker, self.data, self.parent, self.progress = scheduler, tracker, data, parent, progress
        self.system_metrics = system_metrics  # --system-metrics: MLflow's system metrics sampler on each trial run
        self.deadline = deadline or Deadline(None)  # None: no time budget
        self.stopped = 0  # trials stopped mid-run at the deadline
        self.study, self.profile = scheduler.study, scheduler.profile
        self.on_cuda = torch.cuda.is_available()

    def __call__(self, claims: list[Claim]) -> list[bool]:
        """Train claimed trials, packed where their configs share an architecture (pack_key); one bool per
        claim: True when it finished. Ctrl-C (or a full disk) fails every claimed trial still running."""
        groups: dict[Any, list[int]] = {}
        cfgs = [self.study.config(self.profile, c.arm, c.seed, **c.extra) for c in claims]
        for i, cfg in enumerate(cfgs):
            key = pack_key(cfg)
            groups.setdefault(("alone", i) if key is None else key, []).append(i)
        ok = [False] * len(claims)
        try:
            for members in groups.values():
                for i, result in zip(members, self._train([claims[i] for i in members], [cfgs[i] for i in members])):
                    ok[i] = result
        except BaseException:  # Ctrl-C in one group: the claimed trials of the others are failed too (rerun next time)
            try:
                self.scheduler.abandon(claims)
            except DiskFullError:
                pass  # the storage cannot record it: the next execution finds the trials stale (pid gone)
            raise
        return ok

    # ------------------------------------------------------------------ one path for 1..k trials
    def _train(self, claims: list[Claim], cfgs: list[TrialConfig], retry: dict[str, str] | None = None) -> list[bool]:
        """Start the runs, train the claims together, finish them; on failure, the out-of-memory ladder."""
        run_ids: list[str] = []
        try:
            for claim, cfg in zip(claims, cfgs):
                run_ids.append(self._start_run(claim, cfg, len(claims), retry))
            label = claims[0].label + (f" +{len(claims) - 1} packed" if len(claims) > 1 else "")
            self.progress.status(label)

            def on_epoch_of(j: int):
                def on_epoch(epoch: int, m: dict) -> None:
                    with ctrl_c_after():  # the trial's learning curve in Optuna, never a journal write cut in half
                        self.scheduler.report(claims[j], epoch, m.get("val_acc"))
                    if j == 0:
                        self.progress.status(f"{label} epoch {epoch}/{cfgs[0].epochs} val_acc {m.get('val_acc', 0):.3f}")

                return on_epoch

            loggers = [RunLogger(self.tracker, run_id, on_epoch_of(j), self.deadline.shield) for j, run_id in enumerate(run_ids)]
            with self._system_metrics(run_ids), self.deadline.interruptible():
                records = train_packed(cfgs, loggers, progress=False, data=self.data)
            for run_id, claim, record in zip(run_ids, claims, records):
                self._log_record(run_id, claim, record)
        except KeyboardInterrupt:
            self._end_runs(run_ids, "interrupted by Ctrl-C", "KILLED", "interrupted")
            raise
        except TimeBudgetReached:
            self.stopped += len(claims)
            self._end_runs(run_ids, "stopped at the time budget (--time-budget); rerun next time", "KILLED", "interrupted")
            raise
        except DiskFullError as exc:
            self._end_runs(run_ids, str(exc))
            raise
        except Exception as exc:  # a crash of these trials is recorded and the study goes on
            reason = reason_of(exc) if len(claims) == 1 else f"packed x{len(claims)}: {reason_of(exc)}"
            self._end_runs(run_ids, reason)
            if not isinstance(exc, torch.OutOfMemoryError):
                for i, claim in enumerate(claims):
                    self._fail(claim, reason, run_ids[i] if i < len(run_ids) else None)
                if os.environ.get("BENCH_DEBUG"):
                    raise
                return [False] * len(claims)
            ladder = self._ladder(claims, cfgs, retry, reason)
        else:
            return [self._finish(run_id, claim, record) for run_id, claim, record in zip(run_ids, claims, records)]
        # Out of memory, outside the except block: the failed attempt's frames (and device memory) are gone.
        gc.collect()
        if self.on_cuda:
            torch.cuda.empty_cache()
        if ladder is None:
            return [False] * len(claims)
        return [ok for step in ladder for ok in self._train(*step)]

    def _ladder(self, claims: list[Claim], cfgs: list[TrialConfig], retry: dict | None, reason: str) -> list[tuple] | None:
        """The next rung after running out of memory: a pack's trials alone; a lone trial once at half the
        batch size (where the study allows it); else None, the trials failed."""
        if len(claims) > 1:
            return [([c], [cfg], None) for c, cfg in zip(claims, cfgs)]
        claim, cfg = claims[0], cfgs[0]
        if retry is None and self.study.oom_retry and cfg.batch_size > 1:
            half = replace(cfg, batch_size=cfg.batch_size // 2)
            if self.scheduler.set_attrs(claim.trial, {OOM_RETRY: half.batch_size}):
                return [([claim], [half], {tags.OOM_RETRY: f"batch_size halved to {half.batch_size} after: {reason}"})]
            self._lost(claim)  # judged dead meanwhile: the retry is the other worker's
            return None
        self._fail(claim, reason)
        return None

    @contextlib.contextmanager
    def _system_metrics(self, run_ids: list[str]):
        """With --system-metrics: MLflow's sampler (CPU, memory, disk, network; GPU where pynvml is installed)
        logs system/* metrics to each run while it trains, stopped and flushed before the run ends."""
        monitors = [self.tracker.system_metrics(run_id) for run_id in run_ids] if self.system_metrics else []
        try:
            yield
        finally:
            for monitor in monitors:
                monitor.finish()

    # ------------------------------------------------------------------ MLflow and Optuna for one trial
    def _start_run(self, claim: Claim, cfg: TrialConfig, packed: int, retry: dict | None) -> str:
        """Open the trial's MLflow run (a child of the study execution's run)."""
        run_tags = {
            tags.STUDY: self.study.name,
            tags.ARM: claim.arm.name,
            tags.SEED: str(claim.seed),
            tags.CLAIMS: ",".join(self.study.claims),
            tags.PROFILE: self.profile,
            tags.STAGE: claim.stage,
            tags.OPTUNA_STUDY: claim.ostudy.study_name,
            tags.OPTUNA_TRIAL: str(claim.trial.number),
            tags.HOST: hostname(),
            tags.PID: str(os.getpid()),
            tags.TOKEN: WORKER_TOKEN,
            **{f"{tags.FACTOR}{f}": a for f, a in claim.arm.factors.items()},
            **{f"{tags.TUNED if claim.stage == 'final' else tags.TUNE}{k}": str(v) for k, v in claim.extra.items()},
            **({tags.PACKED: str(packed)} if packed > 1 else {}),  # trained together with packed-1 others
            **(retry or {}),
        }
        run_id = self.tracker.start_run(f"{claim.label}", run_tags, as_dict(cfg), parent=self.parent)
        self.scheduler.note_run(claim, run_id)
        return run_id

    def _log_record(self, run_id: str, claim: Claim, record: dict) -> None:
        self.tracker.log_record(run_id, record)
        # False when another worker judged this one dead meanwhile: _finish then ends the run as such
        self.scheduler.set_attrs(claim.trial, {STATUS: record["status"]})

    def _finish(self, run_id: str, claim: Claim, record: dict) -> bool:
        # MLflow before Optuna: a kill in between leaves a FINISHED run whose trial is rerun (a duplicate
        # the report drops by trial), never a COMPLETE trial without its run.
        self.tracker.end_run(run_id, "FINISHED")
        if not self.scheduler.complete(claim, objective(record)):
            # Another worker judged this one dead while it trained (a stalled or suspended process) and
            # reruns it: this run must not count as a second finished (arm, seed).
            self.tracker.fail_run(run_id, JUDGED_DEAD)
            self._lost(claim)
            return False
        done = self.scheduler.plan()[0] if self.progress.enabled else 0  # every worker's, as the storage counts
        self.progress.finished(done, trial_line(claim.stage, claim.arm.name, claim.seed, record))
        return True

    def _fail(self, claim: Claim, reason: str, run_id: str | None = None) -> None:
        """Fail the trial; when another worker had already failed it as stale, its run (ended FAILED with
        `reason` already) says instead that the trial reruns there."""
        if not self.scheduler.fail(claim, reason):
            if run_id is not None:
                self._end_runs([run_id], f"{JUDGED_DEAD} (here it had failed: {reason})")
            self._lost(claim)
            return
        self.progress.finished(self.progress.done, trial_line(claim.stage, claim.arm.name, claim.seed, None, reason))

    def _lost(self, claim: Claim) -> None:
        """A trial another worker failed as stale while this one held it: said once, and this worker goes on."""
        self.progress.finished(self.progress.done, trial_line(claim.stage, claim.arm.name, claim.seed, None, JUDGED_DEAD))

    def _end_runs(self, run_ids: list[str], reason: str, status: str = "FAILED", label: str = "failed") -> None:
        for run_id in run_ids:
            try:
                self.tracker.fail_run(run_id, reason, status, label)
            except DiskFullError:
                pass  # the store cannot take it now: the next execution ends the run (its worker is gone)
