"""The Optuna protocol of a study: per-arm TPE tuning, then arms x seeds final trials claimed by any worker.

What is left, who holds what, and failing the trials of dead workers, so that each (arm, seed) finishes exactly
once whoever runs it. Knows nothing of MLflow or training: it hands claims to an `execute` callable.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .files import Arm, Study
from .liveness import HOST, PID, TOKEN, Heartbeat, heartbeat_interval, stale_reason
from .sampling import SpreadStartTPE, sampler_seed

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runner prints its own progress
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's constant_liar
FAILURE = "failure"  # trial user attribute: why it failed
RUN_ID = "mlflow_run_id"  # trial user attribute: its (latest) MLflow run
STATUS = "status"  # trial user attribute: the record's status ("ok", "diverged")
OOM_RETRY = "oom_retry"  # trial user attribute: the batch size of its retry after running out of memory
UNWANTED = "its arm or seed is no longer in the study file"  # a queued final trial left by an older study file
# Why a worker's trial ended elsewhere: it stalled past the grace period and another worker reruns it.
JUDGED_DEAD = "judged dead by another worker while training (no heartbeat); rerun there"
METRIC_NAME = "best_val_acc"  # what `objective` is, as Optuna's metric name; intermediate values: val_acc per epoch
Execute = Callable[[list["Claim"]], list[bool]]  # trains claimed trials; one bool each: finished
Admit = Callable[[str, Arm], bool]  # (stage, arm): whether a claim of it may start now (the time budget's say)
DEFERRED = "deferred"  # final trial user attribute: popped but not started, the time left being too short for it


@dataclass
class Claim:
    """A trial this worker claimed: what to train (arm, seed, extra config such as the tuned lr) and where
    to tell the result."""

    trial: optuna.Trial
    ostudy: optuna.Study
    stage: str  # "tune" or "final"
    arm: Arm
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.stage} {self.arm.name} seed={self.seed}"


def objective(record: dict[str, Any]) -> float:
    """The value a finished trial tells Optuna: its best validation accuracy, 0 for a run that diverged."""
    return float(record["best_val_acc"]) if record["status"] == "ok" else 0.0


def final_key(trial: optuna.trial.FrozenTrial) -> tuple:
    """(arm, seed) of a final-stage trial: its enqueued fixed params (trials of older executions also have them
    as Optuna parameters)."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    return params.get("arm"), params.get("seed")


class Scheduler:
    """Which trials of (study, profile) are left and who runs them, over one Optuna storage."""

    def __init__(
        self,
        study: Study,
        profile: str,
        storage: optuna.storages.BaseStorage,
        grace: float,
        on_dead: Callable[[str, str, str | None, str], None] | None = None,
    ):
        self.study, self.profile, self.storage, self.grace = study, profile, storage, grace
        self.on_dead = on_dead  # (host, pid, token, reason): end that worker's MLflow runs
        self.heartbeat = Heartbeat(storage, heartbeat_interval(grace))
        self.poll = min(2.0, self.heartbeat.interval)  # seconds between looks while other workers train
        self.arms = study.arms(profile)
        self.seeds = study.seeds(profile)
        self.failures: list[str] = []
        self.failed_keys: set[tuple] = set()  # final (arm, seed) that failed in this execution: rerun next time
        self.failed_arms: set[str] = set()  # arms whose tuning crashed in this execution
        self.admit: Admit = lambda stage, arm: True  # StudyRun sets the time budget's check here
        self.timed = False  # whether a time budget holds (StudyRun sets it with `admit`)
        self.deferred_keys: set[tuple] = set()  # final (arm, seed) left for a later execution: no time for them
        self.deferred_arms: set[str] = set()  # arms whose tuning was left for a later execution
        self._reported: dict[int, set[int]] = {}  # trial id -> epochs reported, once each (an OOM retry trains them again)

    # ------------------------------------------------------------------ the Optuna studies
    def optuna_name(self, suffix: str) -> str:
        return f"{self.study.name}/{self.profile}/{suffix}"

    def _open(self, suffix: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        ostudy = optuna.create_study(
            study_name=self.optuna_name(suffix), storage=self.storage, load_if_exists=True, direction="maximize", sampler=sampler
        )
        if ostudy.metric_names is None:  # optuna-dashboard names the objective after it
            ostudy.set_metric_names([METRIC_NAME])
        self.fail_stale(ostudy)
        return ostudy

    def tune_study(self, arm: Arm) -> optuna.Study:
        return self._open(f"tune/{arm.name}", SpreadStartTPE(sampler_seed(self.study.name, arm.name, self.profile)))

    def final_study(self) -> optuna.Study:
        return self._open("final")

    def fail_stale(self, ostudy: optuna.Study) -> int:
        """Fail every RUNNING trial whose worker is dead (liveness.stale_reason), so its (arm, seed) reruns;
        tell `on_dead` once per dead worker so its MLflow runs end FAILED with the reason."""
        dead: dict[tuple, str] = {}  # (host, pid, token) -> reason
        for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = stale_reason(t, self.grace)
            if reason is None:
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, FAILURE, reason)
                ostudy.tell(t.number, state=TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker judged it first, or it just finished
            attrs = t.user_attrs
            dead.setdefault((str(attrs.get(HOST, "")), str(attrs.get(PID, "")), attrs.get(TOKEN)), reason)
        for (host, pid, token), reason in dead.items():
            print(f"{reason}: its trials are failed and rerun", flush=True)
            if self.on_dead and host and pid:
                self.on_dead(host, pid, token, reason)
        return len(dead)

    # ------------------------------------------------------------------ what is left
    def tuning_done(self, arm: Arm) -> list[optuna.trial.FrozenTrial]:
        """The arm's COMPLETE tuning trials that count: the first `budget` of them by trial number."""
        done = self.tune_study(arm).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(done, key=lambda t: t.number)[: self.study.tuning_trials(self.profile)]

    def tuned_value(self, arm: Arm) -> float | None:
        """The arm's tuned value: the best of its full budget of COMPLETE tuning trials, and None until it has
        them all, so that every worker and execution trains the arm's final trials with one value."""
        budget = self.study.tuning_trials(self.profile)
        if self.study.tuning is None or budget == 0:
            return None
        done = self.tuning_done(arm)
        if len(done) < budget:
            return None
        return max(done, key=lambda t: t.value).params[self.study.tuning.param]

    def tuned_values(self) -> dict[str, float | None]:
        return {a.name: self.tuned_value(a) for a in self.arms}

    def plan(self) -> tuple[int, int]:
        """(trials finished, trials in total) as the storage says now."""
        done, total = 0, 0
        budget = self.study.tuning_trials(self.profile)
        if budget:
            for arm in self.arms:
                done, total = done + len(self.tuning_done(arm)), total + budget
        finished = {final_key(t) for t in self.final_study().get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        wanted = {(a.name, s) for a in self.arms for s in self.seeds}
        return done + len(wanted & finished), total + len(wanted)

    # ------------------------------------------------------------------ claiming and telling
    def _ask(self, ostudy: optuna.Study) -> optuna.Trial:
        """ostudy.ask(), with this worker's host, pid, token and a first heartbeat recorded at once: a claimed
        trial whose process dies before it starts is still recognised as stale and rerun."""
        trial = ostudy.ask()
        self.set_attrs(trial, self.heartbeat.identity())
        self.heartbeat.hold(trial)
        return trial

    def set_attrs(self, trial: optuna.Trial, attrs: dict[str, Any]) -> bool:
        """Write user attributes of a trial this worker claimed; False (nothing raised) when the trial was
        finished meanwhile: another worker judged this one dead (a stall past the grace period) and reruns it.
        Every attribute written on a claimed trial goes through here."""
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            return True
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def _tell(self, ostudy: optuna.Study, trial: optuna.Trial, **kwargs: Any) -> bool:
        """Tell Optuna; False when the trial was already ended by another worker (judged dead meanwhile)."""
        try:
            ostudy.tell(trial, **kwargs)
            return True
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            if self.storage.get_trial(trial._trial_id).state.is_finished():
                return False
            raise
        finally:
            self.heartbeat.release(trial)

    def complete(self, claim: Claim, value: float) -> bool:
        """The trial finished with `value`; False when another worker had already failed it as stale."""
        return self._tell(claim.ostudy, claim.trial, values=value)

    def fail(self, claim: Claim, reason: str) -> bool:
        """The trial failed: recorded with the reason, rerun by the next execution. False (no failure of this
        execution recorded) when another worker had already failed it as stale and reruns it."""
        recorded = self.set_attrs(claim.trial, {FAILURE: reason}) and self._tell(claim.ostudy, claim.trial, state=TrialState.FAIL)
        if not recorded:
            self.heartbeat.release(claim.trial)
            return False
        self.failures.append(f"{claim.label}: {reason}")
        return True

    def abandon(self, claims: list[Claim]) -> None:
        """Interrupted: every claimed trial still RUNNING is failed (rerun next time), quietly."""
        running = {t.number for c in claims[:1] for t in c.ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for claim in claims:
            if claim.trial.number in running:
                self._tell(claim.ostudy, claim.trial, state=TrialState.FAIL)
            else:
                self.heartbeat.release(claim.trial)

    def report(self, claim: Claim, epoch: int, value: float | None) -> None:
        """Validation accuracy after `epoch` as the trial's intermediate value: its curve in optuna-dashboard."""
        reported = self._reported.setdefault(claim.trial._trial_id, set())
        if epoch >= 1 and value is not None and epoch not in reported:
            try:
                claim.trial.report(float(value), epoch)
                reported.add(epoch)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker ended the trial meanwhile (judged this one dead): its rerun reports

    def note_run(self, claim: Claim, run_id: str) -> bool:
        return self.set_attrs(claim.trial, {RUN_ID: run_id})

    def _wait(self, what: str, told: list[bool]) -> None:
        if not told[0]:
            print(
                f"waiting for {what} on other workers (rerun here if a worker sends no heartbeat for {self.grace:.0f} s)",
                flush=True,
            )
            told[0] = True
        time.sleep(self.poll)

    # ------------------------------------------------------------------ the two stages
    def run_tuning(self, pack: int, execute: Execute) -> None:
        """Run tuning trials until every arm has its budget; wait for other workers' tuning trials before
        the final stage needs the tuned values (failing them if their worker dies)."""
        budget, tuning = self.study.tuning_trials(self.profile), self.study.tuning
        told = [False]
        while budget:
            waiting_on = 0
            for arm in self.arms:
                if arm.name in self.failed_arms:
                    continue
                ostudy = self.tune_study(arm)
                while True:
                    trials = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                    complete = sum(t.state == TrialState.COMPLETE for t in trials)
                    if len(trials) >= budget:
                        waiting_on += len(trials) - complete if complete < budget else 0
                        break
                    if not self.admit("tune", arm):  # not enough time left for it: a later execution goes on
                        self.deferred_arms.add(arm.name)
                        break
                    claims = []
                    for _ in range(min(pack, budget - len(trials))):
                        trial = self._ask(ostudy)
                        if len(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))) > budget:
                            self._tell(ostudy, trial, state=TrialState.PRUNED)
                            break  # another worker took the last slot
                        value = trial.suggest_float(tuning.param, tuning.low, tuning.high, log=tuning.log)
                        claims.append(Claim(trial, ostudy, "tune", arm, tuning.seed, {tuning.param: value}))
                    if claims and not all(execute(claims)):
                        self.failed_arms.add(arm.name)
                        break
            if not waiting_on:
                return
            self._wait(f"{waiting_on} tuning trials", told)

    def run_final(self, pack: int, tuned: dict[str, float | None], execute: Execute) -> None:
        """Arms x seeds as enqueued Optuna trials, shared by every worker; each (arm, seed) finishes exactly
        once: a worker that pops one already running or done elsewhere skips it, and one whose worker died
        is failed and enqueued again."""
        ostudy = self.final_study()
        by_name = {a.name: a for a in self.arms}
        wanted = {(a.name, s) for a in self.arms for s in self.seeds}
        told = [False]
        while True:
            self.fail_unwanted(ostudy, wanted)
            trials = ostudy.get_trials(deepcopy=False)
            taken = {final_key(t) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)}
            skip = taken | self.failed_keys | self.deferred_keys
            todo = [(a.name, s) for a in self.arms for s in self.seeds if (a.name, s) not in skip]
            for name, seed in todo:
                ostudy.enqueue_trial({"arm": name, "seed": seed})
            if not todo and not any(t.state == TrialState.WAITING for t in trials):
                running = [t for t in trials if t.state == TrialState.RUNNING and final_key(t) in wanted - self.failed_keys]
                if not running:
                    return
                self._wait(f"{len(running)} final trials", told)
                ostudy = self.final_study()  # fails the trials of workers that died meanwhile
                continue
            claims: list[Claim] = []  # up to `pack` claimed trials, trained together where their configs allow
            while len(claims) < pack:
                if claims and not ostudy.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    break
                claim = self._claim_final(ostudy, by_name, tuned)
                if claim is None:  # pruned or failed: back to the top, which sees whether anything is left
                    break
                claims.append(claim)
            for claim, ok in zip(claims, execute(claims) if claims else []):
                if not ok:
                    self.failed_keys.add((claim.arm.name, claim.seed))

    def fail_unwanted(self, ostudy: optuna.Study, wanted: set[tuple]) -> int:
        """Fail the queued (WAITING) final trials of an (arm, seed) that the study file no longer has (left by an
        earlier version of it), so that no worker pops them."""
        n = 0
        for t in ostudy.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if final_key(t) in wanted:
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, FAILURE, UNWANTED)
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                n += 1
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # failed by another worker meanwhile
        return n

    def _claim_final(self, ostudy: optuna.Study, by_name: dict[str, Arm], tuned: dict) -> Claim | None:
        """Pop the next enqueued (arm, seed), or None when it is done or being done elsewhere (pruned) or
        cannot run (failed)."""
        # No distributions: (arm, seed) stay the enqueued fixed params and never become Optuna parameters, whose
        # categorical choices Optuna freezes at the first trial (a study file that gained or lost an arm or a seed
        # since could then claim nothing), and a popped trial of an arm no longer in the file raises nothing.
        trial = self._ask(ostudy)
        key = final_key(self.storage.get_trial(trial._trial_id))
        if key == (None, None):  # no queued trial was left (another worker popped it): Optuna made a blank one
            self._tell(ostudy, trial, state=TrialState.PRUNED)
            return None
        if key[0] not in by_name or key[1] not in self.seeds:  # queued from an older study file meanwhile
            if self.set_attrs(trial, {FAILURE: UNWANTED}):
                self._tell(ostudy, trial, state=TrialState.FAIL)
            self.heartbeat.release(trial)
            return None
        claim = Claim(trial, ostudy, "final", by_name[key[0]], key[1])
        others = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if key in self.failed_keys or any(final_key(t) == key and t.number != trial.number for t in others):
            self._tell(ostudy, trial, state=TrialState.PRUNED)  # done or being done by another worker
            return None
        budget = self.study.tuning_trials(self.profile)
        if budget and tuned.get(claim.arm.name) is None:
            tuned[claim.arm.name] = self.tuned_value(claim.arm)  # another worker may have finished its tuning since
        # under a time budget, tuning still incomplete is tuning left for later (here or on another worker)
        waits_for_tuning = budget and tuned.get(claim.arm.name) is None and (self.timed or claim.arm.name in self.deferred_arms)
        if waits_for_tuning or not self.admit("final", claim.arm):  # no time for it (or its tuning): a later execution
            self.set_attrs(trial, {DEFERRED: "the time budget left is shorter than its estimate"})
            self._tell(ostudy, trial, state=TrialState.PRUNED)
            self.deferred_keys.add(key)
            return None
        if budget and tuned.get(claim.arm.name) is None:
            self.fail(claim, f"tuning incomplete: {len(self.tuning_done(claim.arm))} of {budget} trials")
            self.failed_keys.add(key)
            return None
        if tuned.get(claim.arm.name) is not None:
            claim.extra = {self.study.tuning.param: tuned[claim.arm.name]}
        return claim

    def close(self) -> None:
        self.heartbeat.stop()
