"""The runner with packed trials (--pack): tuning and final trials of one architecture train together, and an
interrupt mid-pack still ends with every (arm, seed) finished exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from bench.study.scheduler import final_key

from studyrun import SLOW_STUDY, finished_trials, runs_of

PACK_STUDY = """
name = "packs"
claims = ["learning-rate"]
[base]
model = "mlp"
depth = 2
width = 64
batchnorm = false
n_train = 300
n_val = 100
n_test = 100
epochs = 1
eval_train_size = 100
probe_size = 32
[factors.opt]
sgd = { optimizer = "sgd" }
adam = { optimizer = "adam" }
[tuning]
param = "lr"
low = 0.001
high = 0.5
log = true
trials = 3
[profiles.smoke]
seeds = 2
[profiles.quick]
seeds = 2
[profiles.full]
seeds = 3
"""


@pytest.mark.slow
def test_runner_packs_tuning_and_final_trials(tmp_path, data_dir):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "packs.toml").write_text(PACK_STUDY)
    env = {**os.environ, "BENCH_STUDIES_DIR": str(tmp_path / "studies")}
    study = [sys.executable, "-m", "bench", "study", "packs", "--profile", "smoke", "--no-progress", "--data-dir", data_dir]

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(study + ["--pack", "4"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, runs = runs_of(tmp_path, "packs")
    children = [r for r in runs if r.data.tags.get("bench.stage")]
    finals = [r for r in children if r.data.tags["bench.stage"] == "final"]
    tunes = [r for r in children if r.data.tags["bench.stage"] == "tune"]
    assert Counter((r.data.tags["bench.arm"], r.data.tags["bench.seed"]) for r in finals) == Counter(
        {(a, s): 1 for a in ("sgd", "adam") for s in ("0", "1")}
    )
    assert len(tunes) == 6 and all(r.info.status == "FINISHED" for r in children)
    # the final stage packs up to 4 trials: all four (arm, seed) share one architecture
    assert {r.data.tags.get("bench.packed") for r in finals} == {"4"}
    # tuning packs each arm's 3 trials, with distinct learning rates
    assert {r.data.tags.get("bench.packed") for r in tunes} == {"3"}
    for arm in ("sgd", "adam"):
        lrs = [r.data.tags["bench.tune_lr"] for r in tunes if r.data.tags["bench.arm"] == arm]
        assert len(set(lrs)) == 3
    proc = run()
    assert proc.returncode == 0 and "is complete" in proc.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.slow
def test_interrupted_packed_study_reruns_every_claimed_trial(tmp_path, data_dir, sig):
    """--pack 4 over 2 arms x 3 seeds claims trials of both arms at once (two packs): an interrupt
    in the first leaves no claimed trial RUNNING for good; the rerun finishes each exactly once."""
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "slow.toml").write_text(SLOW_STUDY)
    env = {**os.environ, "BENCH_STUDIES_DIR": str(studies), "BENCH_DATA_DIR": data_dir}
    cmd = [sys.executable, "-m", "bench", "study", "slow", "--profile", "smoke", "--no-progress", "--pack", "4"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 180
    while time.time() < deadline and not [
        t for t in finished_trials(tmp_path) if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs
    ]:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    claimed = [t for t in finished_trials(tmp_path) if t.state.name in ("RUNNING", "FAIL")]
    assert len(claimed) == 4  # the whole claim: the pack that was training and the trial waiting for its turn
    assert all("pid" in t.user_attrs for t in claimed)  # so a dead worker's claims are recognised as stale
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = finished_trials(tmp_path)
    complete = Counter(final_key(t) for t in trials if t.state.name == "COMPLETE")
    assert complete == Counter({(arm, seed): 1 for arm in ("p0.0", "p0.5") for seed in range(3)})
    assert not [t for t in trials if t.state.name == "RUNNING"]
    _, runs = runs_of(tmp_path, "slow")
    assert not [r for r in runs if r.info.status == "RUNNING"]
