"""The scheduler and executor among several workers, with training stubbed and real Optuna/MLflow SQLite stores.

A worker judged dead while it trains hands the trial over and goes on; queued trials of arms or seeds the study
file no longer has are failed, never popped; an arm runs its final trials only with its full tuning budget; a
retried state change succeeds only when it is what was asked; a process with a dead worker's host and pid is
still another worker.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from bench.study import executor as executor_module
from bench.study import liveness, stores
from bench.study import tracking as tags
from bench.study.executor import Executor
from bench.study.files import load_study
from bench.study.progress import Progress
from bench.study.sampling import SPREAD_START, sampler_seed, spread_point
from bench.study.scheduler import FAILURE, JUDGED_DEAD, UNWANTED, Claim, Scheduler, final_key
from bench.study.tracking import Tracker

from studyrun import SLOW_STUDY

TUNED_STUDY = SLOW_STUDY.replace('name = "slow"', 'name = "tuned"').replace(
    "[profiles.smoke]\nseeds = 3", '[tuning]\nparam = "lr"\nlow = 0.001\nhigh = 0.5\ntrials = 3\n[profiles.smoke]\nseeds = 2'
)


def study_of(tmp_path, text: str = SLOW_STUDY, seeds: int | None = None):
    if seeds is not None:
        text = text.replace("[profiles.smoke]\nseeds = 3", f"[profiles.smoke]\nseeds = {seeds}")
    name = re.search(r'^name = "(.+)"', text, re.M).group(1)
    path = tmp_path / f"{name}.toml"  # a study file is named after its study
    path.write_text(text)
    return load_study(path)


def storage_of(tmp_path, kind: str = "sqlite"):
    if kind == "journal":
        journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "studies.journal"))
        return stores.RetryingStorage(optuna.storages.JournalStorage(journal), stores.Where("journal"))
    return stores.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")


@pytest.fixture
def schedulers():
    made = []

    def make(study, storage, **kwargs):
        made.append(Scheduler(study, "smoke", storage, grace=300.0, **kwargs))
        return made[-1]

    yield make
    for scheduler in made:
        scheduler.close()


def completing(scheduler: Scheduler, trained: list | None = None, value=lambda c: 0.5):
    """An `execute` that finishes every claim at once (no training), noting what it was handed."""

    def execute(claims: list[Claim]) -> list[bool]:
        for claim in claims:
            if trained is not None:
                trained.append((claim.stage, claim.arm.name, claim.seed, dict(claim.extra)))
        return [scheduler.complete(claim, value(claim)) for claim in claims]

    return execute


def states(ostudy: optuna.Study) -> Counter:
    return Counter((*final_key(t), t.state.name) for t in ostudy.get_trials(deepcopy=False))


# ---------------------------------------------------------------------- judged dead while training
RECORD = {
    "status": "ok",
    "data_source": "stub",
    "device": "cpu",
    "git_commit": "x",
    "epochs_run": 1,
    "seconds": 0.1,
    "train_seconds": 0.1,
    "images_per_s": 1.0,
    "best_val_acc": 0.5,
}


def judge_dead(storage, trial_id: int) -> None:
    """What a surviving worker does to a trial whose worker stalled past the grace period."""
    storage.set_trial_user_attr(trial_id, FAILURE, "worker node-b:1 sent no heartbeat for 400 s (grace period 300 s)")
    storage.set_trial_state_values(trial_id, TrialState.FAIL)


@pytest.mark.parametrize("how", ["finishes", "crashes"])
def test_a_worker_judged_dead_while_training_hands_the_trial_over_and_goes_on(tmp_path, monkeypatch, schedulers, how):
    """The first trial is failed by another worker while it trains; this worker neither raises nor counts it as
    its own failure, its run ends FAILED saying why, and the next trial trains as usual."""
    monkeypatch.chdir(tmp_path)
    storage = storage_of(tmp_path)
    scheduler = schedulers(study_of(tmp_path, seeds=1), storage)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "slow")
    calls = []

    def stub_training(cfgs, loggers, progress=False, data=None):
        calls.append(len(cfgs))
        if len(calls) == 1:
            running = scheduler.final_study().get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            judge_dead(storage, running[0]._trial_id)
            if how == "crashes":
                raise RuntimeError("the device fell over")
        return [dict(RECORD) for _ in cfgs]

    monkeypatch.setattr(executor_module, "train_packed", stub_training)
    execute = Executor(scheduler, tracker, None, None, Progress(2, 0, "slow", enabled=False))
    scheduler.run_final(1, {}, execute)

    assert len(calls) == 2 and scheduler.failures == []
    trials = scheduler.final_study().get_trials(deepcopy=False)
    assert Counter(t.state.name for t in trials) == Counter({"FAIL": 1, "COMPLETE": 1})
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert "no heartbeat" in failed.user_attrs[FAILURE] and "status" not in failed.user_attrs
    runs = MlflowClient(tracker.uri).search_runs([tracker.experiment_id])
    assert Counter(r.info.status for r in runs) == Counter({"FAILED": 1, "FINISHED": 1})
    lost = next(r for r in runs if r.info.status == "FAILED")
    assert lost.data.tags[tags.FAILURE].startswith(JUDGED_DEAD) and lost.data.tags[tags.OPTUNA_TRIAL] == str(failed.number)
    if how == "crashes":
        assert "RuntimeError: the device fell over" in lost.data.tags[tags.FAILURE]


def test_fail_and_attributes_of_a_trial_finished_elsewhere_say_so_instead_of_raising(tmp_path, schedulers):
    storage = storage_of(tmp_path)
    study = study_of(tmp_path, seeds=1)
    scheduler = schedulers(study, storage)
    ostudy = scheduler.final_study()
    trial = scheduler._ask(ostudy)
    judge_dead(storage, trial._trial_id)
    claim = Claim(trial, ostudy, "final", study.arms("smoke")[0], 0)
    assert scheduler.set_attrs(trial, {"status": "ok"}) is False
    assert scheduler.note_run(claim, "abc") is False
    assert scheduler.fail(claim, "RuntimeError: boom") is False and scheduler.failures == []
    assert storage.get_trial(trial._trial_id).user_attrs[FAILURE].startswith("worker node-b:1")


# ---------------------------------------------------------------------- arms and seeds the study file no longer has
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_queued_trials_of_arms_or_seeds_no_longer_in_the_study_file_are_failed_not_popped(tmp_path, schedulers, kind):
    storage = storage_of(tmp_path, kind)
    scheduler = schedulers(study_of(tmp_path, seeds=2), storage)
    ostudy = scheduler.final_study()
    for params in ({"arm": "p0.9", "seed": 0}, {"arm": "p0.0", "seed": 0}, {"arm": "p0.5", "seed": 7}):
        ostudy.enqueue_trial(params)  # an earlier study file had arm p0.9 and more seeds
    trained = []
    scheduler.run_final(1, {}, completing(scheduler, trained))
    assert sorted((arm, seed) for _, arm, seed, _ in trained) == [("p0.0", 0), ("p0.0", 1), ("p0.5", 0), ("p0.5", 1)]
    assert states(ostudy) == Counter(
        {("p0.9", 0, "FAIL"): 1, ("p0.5", 7, "FAIL"): 1, **{(a, s, "COMPLETE"): 1 for a in ("p0.0", "p0.5") for s in (0, 1)}}
    )
    assert all(t.user_attrs[FAILURE] == UNWANTED for t in ostudy.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    assert scheduler.failures == []
    # one queued by an older study file between the check and the claim: popped without raising, and failed
    ostudy.enqueue_trial({"arm": "p0.9", "seed": 1})
    assert scheduler._claim_final(ostudy, {a.name: a for a in scheduler.arms}, {}) is None
    assert states(ostudy)[("p0.9", 1, "FAIL")] == 1 and not ostudy.get_trials(states=(TrialState.RUNNING,))


# ---------------------------------------------------------------------- tuning: the full budget or no final trials
def test_an_arm_whose_tuning_is_incomplete_runs_no_final_trial_until_a_later_execution_finishes_it(tmp_path, schedulers):
    storage = storage_of(tmp_path)
    study = study_of(tmp_path, TUNED_STUDY)
    first = schedulers(study, storage)
    trained = []

    def crash_third_tuning_trial_of_p00(claims):
        ok = []
        for claim in claims:
            if claim.stage == "tune" and claim.arm.name == "p0.0" and claim.trial.number == 2:
                first.fail(claim, "RuntimeError: boom")
                ok.append(False)
            else:
                trained.append((claim.stage, claim.arm.name, claim.seed, dict(claim.extra)))
                ok.append(first.complete(claim, claim.extra.get("lr", 0.5)))
        return ok

    first.run_tuning(1, crash_third_tuning_trial_of_p00)
    tuned = first.tuned_values()
    assert tuned["p0.0"] is None and tuned["p0.5"] is not None
    first.run_final(1, tuned, crash_third_tuning_trial_of_p00)
    finals = [t for t in trained if t[0] == "final"]
    assert sorted(t[1] for t in finals) == ["p0.5", "p0.5"] and all(t[3] == {"lr": tuned["p0.5"]} for t in finals)
    failed = first.final_study().get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert sorted(final_key(t) for t in failed) == [("p0.0", 0), ("p0.0", 1)]
    assert {t.user_attrs[FAILURE] for t in failed} == {"tuning incomplete: 2 of 3 trials"}

    second = schedulers(study, storage)  # a later execution: the missing tuning trial, then p0.0's finals
    trained.clear()
    second.run_tuning(1, completing(second, trained, lambda c: c.extra["lr"]))
    tuned_again = second.tuned_values()
    best = max(second.tune_study(study.arms("smoke")[0]).get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    assert tuned_again == {"p0.0": best.params["lr"], "p0.5": tuned["p0.5"]}
    second.run_final(1, tuned_again, completing(second, trained))
    finals = [t for t in trained if t[0] == "final"]
    assert [(t[1], t[3]) for t in finals] == [("p0.0", {"lr": best.params["lr"]})] * 2
    assert second.plan() == (10, 10)


# ---------------------------------------------------------------------- a retried state change
@pytest.mark.parametrize("meanwhile", ["landed", "failed elsewhere"])
def test_a_retried_state_change_succeeds_only_when_the_trial_is_in_the_state_asked(tmp_path, monkeypatch, schedulers, meanwhile):
    """The first try's connection drops: either after it landed (success) or while another worker failed the
    trial (then the worker's tell says the trial was finished elsewhere)."""
    monkeypatch.setattr(stores, "FIRST_DELAY", 0.01)
    storage = storage_of(tmp_path)
    study = study_of(tmp_path, seeds=1)
    scheduler = schedulers(study, storage)
    ostudy = scheduler.final_study()
    trial = scheduler._ask(ostudy)
    real, tries = storage.inner.set_trial_state_values, []

    def dropped_once(trial_id, state, values=None):
        tries.append(state)
        if len(tries) == 1:
            if meanwhile == "landed":
                real(trial_id, state, values)
            else:  # another worker judged this one dead
                storage.inner.set_trial_user_attr(trial_id, FAILURE, "worker node-b:1 sent no heartbeat")
                real(trial_id, TrialState.FAIL)
            raise RuntimeError("server closed the connection unexpectedly")
        return real(trial_id, state, values)

    monkeypatch.setattr(storage.inner, "set_trial_state_values", dropped_once)
    told = scheduler.complete(Claim(trial, ostudy, "final", study.arms("smoke")[0], 0), 0.7)
    assert len(tries) == 2
    state = storage.get_trial(trial._trial_id).state
    assert (told, state) == ((True, TrialState.COMPLETE) if meanwhile == "landed" else (False, TrialState.FAIL))


# ---------------------------------------------------------------------- a reused host name and pid
def test_a_dead_worker_with_this_host_and_pid_is_another_worker(tmp_path, monkeypatch, schedulers):
    """A container restarted under the same host name is often the same pid again: the dead worker's trials and
    runs are failed, this process's own live runs are not."""
    monkeypatch.chdir(tmp_path)
    storage = storage_of(tmp_path)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "slow")
    here, pid = liveness.hostname(), str(os.getpid())
    old_token = "0123456789abcdef@earlier-boot:1"
    identity = {tags.HOST: here, tags.PID: pid}
    old_run = tracker.start_run("old", {**identity, tags.TOKEN: old_token})
    older_run = tracker.start_run("older", identity)  # written before workers had tokens
    own_run = tracker.start_run("own", {**identity, tags.TOKEN: liveness.WORKER_TOKEN})
    scheduler = schedulers(study_of(tmp_path, seeds=1), storage, on_dead=tracker.end_runs_of_worker)
    ostudy = scheduler.final_study()
    dead, own = ostudy.ask(), scheduler._ask(ostudy)
    for key, value in {liveness.HOST: here, liveness.PID: os.getpid(), liveness.TOKEN: old_token}.items():
        dead.set_user_attr(key, value)

    assert scheduler.fail_stale(ostudy) == 1
    assert storage.get_trial(dead._trial_id).state == TrialState.FAIL
    assert storage.get_trial(own._trial_id).state == TrialState.RUNNING
    client = MlflowClient(tracker.uri)
    status = {run_id: client.get_run(run_id).info.status for run_id in (old_run, older_run, own_run)}
    assert status == {old_run: "FAILED", older_run: "RUNNING", own_run: "RUNNING"}
    assert "an earlier process with this host name and process id" in client.get_run(old_run).data.tags[tags.FAILURE]
    assert liveness.local_gone(here, pid, None)  # the tokenless run's worker is another process too


def test_a_reused_pid_on_this_host_is_not_its_worker(tmp_path):
    parent = os.getppid()  # alive: its birth decides whether it is the worker that recorded it
    birth = liveness.process_birth(parent)
    if not birth:
        pytest.skip("no /proc here: only the process table decides")
    here = liveness.hostname()
    assert liveness.local_gone(here, str(parent), f"abc@{birth}") is None
    assert liveness.local_gone(here, str(parent), None) is None  # no birth recorded: the process table alone
    reason = liveness.local_gone(here, str(parent), f"abc@{birth.split(':')[0]}:1")
    assert reason and "now belongs to another process" in reason
    assert liveness.local_gone(here, str(os.getpid()), liveness.WORKER_TOKEN) is None


def test_a_study_file_that_gained_or_lost_seeds_and_arms_claims_its_trials(tmp_path, schedulers):
    """Optuna freezes a categorical parameter's choices at its first trial: (arm, seed) are never parameters, so
    a study whose file changed after its final stage began (here trials recorded by an earlier execution with
    arm and seed as parameters) goes on."""
    storage = storage_of(tmp_path)
    ostudy = schedulers(study_of(tmp_path, seeds=2), storage).final_study()
    earlier = {"arm": CategoricalDistribution(["p0.0", "p0.5", "p0.9"]), "seed": CategoricalDistribution([0, 1])}
    ostudy.enqueue_trial({"arm": "p0.0", "seed": 0})
    ostudy.tell(ostudy.ask(earlier), 0.5)  # what executions before this change recorded
    ostudy.enqueue_trial({"arm": "p0.9", "seed": 1})  # left queued, then p0.9 was dropped from the file
    more = schedulers(study_of(tmp_path, seeds=3), storage)
    trained = []
    more.run_final(2, {}, completing(more, trained))
    assert sorted((arm, seed) for _, arm, seed, _ in trained) == [(a, s) for a in ("p0.0", "p0.5") for s in range(3)][1:]
    assert states(ostudy) == Counter(
        {("p0.9", 1, "FAIL"): 1, **{(a, s, "COMPLETE"): 1 for a in ("p0.0", "p0.5") for s in range(3)}}
    )
    assert more.plan() == (6, 6)


# ---------------------------------------------------------------------- tuning: where the first trials go
def test_spread_points_halve_the_gaps_in_order():
    assert [spread_point(i, 0.0, 1.0, log=False) for i in range(7)] == [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    assert [spread_point(i, 1e-4, 1.0, log=True) for i in range(3)] == pytest.approx([1e-2, 1e-3, 1e-1])


def test_each_arm_samples_with_its_own_seed_fixed_by_study_arm_and_profile(tmp_path, schedulers):
    """No two arms share one random stream (every arm was seeded 0), and a rerun draws the same points."""
    study = study_of(tmp_path, TUNED_STUDY)
    scheduler = schedulers(study, storage_of(tmp_path))
    seeds = {arm.name: scheduler.tune_study(arm).sampler._rng.rng.randint(2**31) for arm in scheduler.arms}
    assert len(set(seeds.values())) == len(seeds) >= 2
    again = {arm.name: scheduler.tune_study(arm).sampler._rng.rng.randint(2**31) for arm in scheduler.arms}
    assert again == seeds
    assert sampler_seed("optimizer", "adam", "quick") == sampler_seed("optimizer", "adam", "quick")
    assert len({sampler_seed(s, a, p) for s in ("optimizer", "dropout") for a in ("sgd", "adam") for p in ("quick", "full")}) == 8


def test_each_arms_first_tuning_trials_spread_over_the_range_then_tpe_goes_on(tmp_path, schedulers):
    """Two trials asked at once (pack 2) get distinct points; every arm tries the same spread points first (a random
    start clustered within half a decade and left Adam without a rate near 1e-3), then TPE picks within range."""
    study = study_of(tmp_path, TUNED_STUDY.replace("\ntrials = 3\n", "\ntrials = 5\n"))
    scheduler = schedulers(study, storage_of(tmp_path))
    trained = []
    scheduler.run_tuning(2, completing(scheduler, trained, lambda c: -abs(math.log(c.extra["lr"] / 0.02))))
    tuning, arms = study.tuning, {t[1] for t in trained}
    assert len(arms) == 2 and len(trained) == 10
    lo, hi = math.log(tuning.low), math.log(tuning.high)
    for arm in arms:
        tried = [t[3]["lr"] for t in trained if t[1] == arm]
        start = sorted((math.log(v) - lo) / (hi - lo) for v in tried[:SPREAD_START])
        assert start == pytest.approx([0.25, 0.5, 0.75])
        assert len(set(tried)) == 5 and all(tuning.low <= v <= tuning.high for v in tried)
