"""`bench study --time-budget`: the deadline's rules (what may start, what is stopped and when), and the CPU test of
short slots: a smoke study cut by its budget, exported, imported in a fresh working directory and run on, slot after
slot, ends with every (arm, seed) finished exactly once and the verdicts of one uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from bench.study import tracking as tags
from bench.study.deadline import Deadline, TimeBudgetReached, ctrl_c_after
from bench.study.files import get_study
from bench.study.scheduler import final_key
from report.figures import FigureMaker
from report.sections import build_sections
from report.sources import from_mlflow

from studyrun import SMOKE_SECONDS, run_study, runs_of

ARM = get_study("optimizer").arms("smoke")[0]


def spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def test_no_deadline_admits_everything_and_never_interrupts():
    d = Deadline(None, {("final", ARM.name): 1e9})
    assert d.admits("final", ARM) and d.left() == float("inf")
    with d.interruptible():
        spin(0.05)
    assert not d.reached and not d.deferred


def test_a_claim_starts_only_when_its_estimate_fits_in_the_time_left():
    d = Deadline(time.time() + 60, {("tune", ARM.name): 30.0, ("final", ARM.name): 90.0})
    assert d.admits("tune", ARM)
    assert not d.admits("final", ARM)
    assert d.deferred == {("final", ARM.name)} and not d.reached  # deferred for lack of time; the deadline has not passed
    past = Deadline(time.time() - 1)
    assert not past.admits("tune", ARM) and past.reached


def test_training_is_stopped_at_the_deadline():
    d = Deadline(time.time() + 0.2)
    start = time.time()
    with pytest.raises(TimeBudgetReached):
        with d.interruptible():
            spin(5)
    assert time.time() - start < 1.5 and d.reached


def test_a_store_write_inside_training_finishes_before_the_stop():
    d = Deadline(time.time() + 0.1)
    wrote = []
    with pytest.raises(TimeBudgetReached):
        with d.interruptible():
            with d.shield():
                spin(0.4)  # the deadline passes in here
                wrote.append(True)
            spin(5)
    assert wrote == [True]


def test_past_the_deadline_nothing_starts_training():
    d = Deadline(time.time() - 1)
    ran = []
    with pytest.raises(TimeBudgetReached):
        with d.interruptible():
            ran.append(True)
    assert ran == []


def test_a_time_budget_must_be_positive(bench_cli):
    code, _, err = bench_cli("study", "optimizer", "--profile", "smoke", "--time-budget", "0")
    assert code == 2 and "--time-budget" in err


def verdicts(uri: str) -> list[tuple]:
    """Per claim of the store's runs: verdict, reason, and each part's numbers (links to runs by number: the imported
    runs are new runs with new ids)."""
    src = from_mlflow(uri)
    secs = build_sections(src.df, FigureMaker(None, ""), None, src.extras)
    return [(s.claim_id, s.verdict.label, s.verdict.reason, [repr(replace(p, runs=len(p.runs))) for p in s.parts]) for s in secs]


def bench(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=SMOKE_SECONDS)


@pytest.mark.slow
def test_slots_cut_by_their_budget_end_as_one_uninterrupted_run(tmp_path: Path, data_dir, smoke_study):
    whole, proc = smoke_study("optimizer")  # the study run whole, in one go (tests/test_runner.py checks it too)
    assert proc.returncode == 0, proc.stderr

    carried, budget, said = None, 8, []
    for slot in range(1, 8):  # each slot a fresh working directory: its stores are only what it imports
        here = tmp_path / f"slot{slot}"
        here.mkdir()
        if carried:
            proc = bench(here, "import", str(carried))
            assert proc.returncode == 0, proc.stderr
        bundle = here / "slot.json.gz"
        proc = run_study(here, "optimizer", "--data-dir", data_dir, "--time-budget", str(budget), "--export", str(bundle))
        assert proc.returncode == 0, proc.stderr
        said.append(proc.stdout)
        if bundle.exists():
            carried = bundle
        else:  # a slot too short for any trial on a busy machine: nothing to carry, and it says so
            assert carried is None and "nothing exported" in proc.stdout, proc.stdout
        if "18/18 trials finished" in proc.stdout:
            break
        budget += 6  # after the first (cut mid-way), slots long enough that a busy machine needs few
    else:
        pytest.fail("seven slots did not finish the smoke study:\n" + "\n".join(said))
    cut = [s for s in said if "time budget reached" in s]
    assert cut, "the first slot's budget cuts the study mid-way:\n" + said[0]
    assert all("continue with: bench study optimizer --profile smoke" in s for s in cut)

    journal = JournalStorage(JournalFileBackend(str(here / "optuna" / "studies.journal")))
    trials = [
        t
        for s in optuna.get_all_study_summaries(journal)
        for t in optuna.load_study(study_name=s.study_name, storage=journal).get_trials()
    ]
    assert trials and all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials)  # nothing left RUNNING
    finals = optuna.load_study(study_name="optimizer/smoke/final", storage=journal).get_trials()
    keys = sorted(final_key(t) for t in finals if t.state == TrialState.COMPLETE)
    arms = get_study("optimizer").arms("smoke")
    assert keys == sorted((a.name, 0) for a in arms)  # every (arm, seed) finished exactly once
    _, runs = runs_of(here, "optimizer")
    assert all(r.info.status == "FINISHED" for r in runs)  # the runs stopped mid-way stayed in their slots, unexported
    assert len([r for r in runs if r.data.tags.get(tags.STAGE) == "final"]) == len(arms)
    mine = verdicts(f"sqlite:///{here / 'mlflow.db'}")
    assert any(parts for *_, parts in mine), "the verdicts compared have measured parts"
    assert mine == verdicts(f"sqlite:///{whole / 'mlflow.db'}")


def test_ctrl_c_during_a_store_write_lands_after_it():
    """A trial's per-epoch Optuna write is not cut by Ctrl-C (a journal lock left taken would hang every later
    write): the interrupt arrives once the write is done."""
    done = []
    # Python's own handler, as under a terminal: a background job (`cmd &` in a script) inherits SIGINT ignored
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c_after():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # the signal is held, not raised, while the write goes on
                done.append("write")
            for _ in range(1000):  # raised as soon as the handler is back
                time.sleep(0.001)
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert done == ["write"]
