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
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from .files import Arm, Study
from .liveness import HOST, PID, Heartbeat, heartbeat_interval, stale_reason

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runner prints its own progress
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's constant_liar
FAILURE = "failure"  # trial user attribute: why it failed
RUN_ID = "mlflow_run_id"  # trial user attribute: its (latest) MLflow run

Execute = Callable[[list["Claim"]], list[bool]]  # trains claimed trials; one bool each: finished


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


def final_key(trial: optuna.trial.FrozenTrial) -> tuple:
    """(arm, seed) of a final-stage trial; an enqueued (WAITING) one has them only as fixed params."""
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
        on_dead: Callable[[str, str, str], None] | None = None,
    ):
        self.study, self.profile, self.storage, self.grace = study, profile, storage, grace
        self.on_dead = on_dead  # (host, pid, reason): end that worker's MLflow runs
        self.heartbeat = Heartbeat(storage, heartbeat_interval(grace))
        self.poll = min(2.0, self.heartbeat.interval)  # seconds between looks while other workers train
        self.arms = study.arms(profile)
        self.seeds = study.seeds(profile)
        self.failures: list[str] = []
        self.failed_keys: set[tuple] = set()  # final (arm, seed) that failed in this execution: rerun next time
        self.failed_arms: set[str] = set()  # arms whose tuning crashed in this execution

    # ------------------------------------------------------------------ the Optuna studies
    def optuna_name(self, suffix: str) -> str:
        return f"{self.study.name}/{self.profile}/{suffix}"

    def _open(self, suffix: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
        ostudy = optuna.create_study(
            study_name=self.optuna_name(suffix), storage=self.storage, load_if_exists=True, direction="maximize", sampler=sampler
        )
        self.fail_stale(ostudy)
        return ostudy

    def tune_study(self, arm: Arm) -> optuna.Study:
        # constant_liar: trials running in parallel (packed or other workers) get distinct suggestions
        return self._open(f"tune/{arm.name}", optuna.samplers.TPESampler(seed=0, n_startup_trials=3, constant_liar=True))

    def final_study(self) -> optuna.Study:
        return self._open("final")

    def fail_stale(self, ostudy: optuna.Study) -> int:
        """Fail every RUNNING trial whose worker is dead (liveness.stale_reason), so its (arm, seed) reruns;
        tell `on_dead` once per dead worker so its MLflow runs end FAILED with the reason."""
        dead: dict[tuple, str] = {}
        for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = stale_reason(t, self.grace)
            if reason is None:
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, FAILURE, reason)
                ostudy.tell(t.number, state=TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker judged it first, or it just finished
            dead.setdefault((str(t.user_attrs.get(HOST, "")), str(t.user_attrs.get(PID, ""))), reason)
        for (host, pid), reason in dead.items():
            print(f"{reason}: its trials are failed and rerun", flush=True)
            if self.on_dead and host and pid:
                self.on_dead(host, pid, reason)
        return len(dead)

    # ------------------------------------------------------------------ what is left
    def tuned_value(self, arm: Arm) -> float | None:
        if self.study.tuning is None or self.study.tuning_trials(self.profile) == 0:
            return None
        done = self.tune_study(arm).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
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
                n_done = len(self.tune_study(arm).get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                done, total = done + min(n_done, budget), total + budget
        finished = {final_key(t) for t in self.final_study().get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        wanted = {(a.name, s) for a in self.arms for s in self.seeds}
        return done + len(wanted & finished), total + len(wanted)

    # ------------------------------------------------------------------ claiming and telling
    def _ask(self, ostudy: optuna.Study, dists: dict | None = None) -> optuna.Trial:
        """ostudy.ask(), with this worker's host, pid and a first heartbeat recorded at once: a claimed trial
        whose process dies before it starts is still recognised as stale and rerun."""
        trial = ostudy.ask(dists)
        self.heartbeat.hold(trial)
        return trial

    def _tell(self, claim: Claim, **kwargs: Any) -> bool:
        """Tell Optuna; False when the trial was already ended by another worker (judged dead meanwhile)."""
        try:
            claim.ostudy.tell(claim.trial, **kwargs)
            return True
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            if self.storage.get_trial(claim.trial._trial_id).state.is_finished():
                return False
            raise
        finally:
            self.heartbeat.release(claim.trial)

    def complete(self, claim: Claim, value: float) -> bool:
        """The trial finished with `value`; False when another worker had already failed it as stale."""
        return self._tell(claim, values=value)

    def fail(self, claim: Claim, reason: str) -> None:
        """The trial failed: recorded with the reason, rerun by the next execution."""
        claim.trial.set_user_attr(FAILURE, reason)
        self._tell(claim, state=TrialState.FAIL)
        self.failures.append(f"{claim.label}: {reason}")

    def abandon(self, claims: list[Claim]) -> None:
        """Interrupted: every claimed trial still RUNNING is failed (rerun next time), quietly."""
        running = {t.number for c in claims[:1] for t in c.ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for claim in claims:
            if claim.trial.number in running:
                self._tell(claim, state=TrialState.FAIL)
            else:
                self.heartbeat.release(claim.trial)

    def note_run(self, claim: Claim, run_id: str) -> None:
        claim.trial.set_user_attr(RUN_ID, run_id)

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
                    claims = []
                    for _ in range(min(pack, budget - len(trials))):
                        trial = self._ask(ostudy)
                        if len(ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))) > budget:
                            self._tell(Claim(trial, ostudy, "tune", arm, tuning.seed), state=TrialState.PRUNED)
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
        dists = {"arm": CategoricalDistribution(list(by_name)), "seed": CategoricalDistribution(self.seeds)}
        told = [False]
        while True:
            trials = ostudy.get_trials(deepcopy=False)
            taken = {final_key(t) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)}
            todo = [(a.name, s) for a in self.arms for s in self.seeds if (a.name, s) not in taken | self.failed_keys]
            for name, seed in todo:
                ostudy.enqueue_trial({"arm": name, "seed": seed})
            if not todo and not any(t.state == TrialState.WAITING for t in trials):
                running = [t for t in trials if t.state == TrialState.RUNNING and final_key(t) not in self.failed_keys]
                if not running:
                    return
                self._wait(f"{len(running)} final trials", told)
                ostudy = self.final_study()  # fails the trials of workers that died meanwhile
                continue
            claims: list[Claim] = []  # up to `pack` claimed trials, trained together where their configs allow
            while len(claims) < pack:
                if claims and not ostudy.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    break
                claim = self._claim_final(ostudy, dists, by_name, tuned)
                if claim is None:  # pruned or failed: back to the top, which sees whether anything is left
                    break
                claims.append(claim)
            for claim, ok in zip(claims, execute(claims) if claims else []):
                if not ok:
                    self.failed_keys.add((claim.arm.name, claim.seed))

    def _claim_final(self, ostudy: optuna.Study, dists: dict, by_name: dict[str, Arm], tuned: dict) -> Claim | None:
        """Pop the next enqueued (arm, seed), or None when it is done or being done elsewhere (pruned) or
        cannot run (failed)."""
        trial = self._ask(ostudy, dists)
        key = (trial.params["arm"], trial.params["seed"])
        claim = Claim(trial, ostudy, "final", by_name[key[0]], key[1])
        others = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if key in self.failed_keys or any(final_key(t) == key and t.number != trial.number for t in others):
            self._tell(claim, state=TrialState.PRUNED)  # done or being done by another worker
            return None
        if self.study.tuning_trials(self.profile) and tuned.get(claim.arm.name) is None:
            self.fail(claim, "no finished tuning trial for this arm")
            self.failed_keys.add(key)
            return None
        if tuned.get(claim.arm.name) is not None:
            claim.extra = {self.study.tuning.param: tuned[claim.arm.name]}
        return claim

    def close(self) -> None:
        self.heartbeat.stop()
