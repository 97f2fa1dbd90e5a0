"""Local faults, for real: a full disk mid-study, a new store raced by a reader, unwritable output paths.

The stores' disk is a small tmpfs mounted by the test; the reader is MLflow itself, not bench; a bad path is one
line and exit 2 before any work.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections import Counter

import pytest

from bench.cli import main
from bench.study.scheduler import final_key

from studyrun import QUICK_STUDY, complete_count, finished_trials, run_study, runs_of, start_study, wait_until

EXPECTED = Counter({(arm, seed): 1 for arm in ("p0.0", "p0.5") for seed in range(3)})


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs: room for the stores of a small study, and quick to fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder) -> None:
    """Write a file until the filesystem has no byte left."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2**20)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error: ")]


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_study_resumes_after_space_is_freed(small_disk, data_dir):
    (small_disk / "slow.toml").write_text(QUICK_STUDY)
    env = {**os.environ, "BENCH_DATA_DIR": data_dir}
    proc = start_study(small_disk, "./slow.toml", env=env)
    try:
        wait_until(lambda: complete_count(small_disk) >= 2, 180, "two finished trials")
        fill(small_disk)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out + err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "no space left on device" in lines[0] and str(small_disk) in lines[0] and "MB free" in lines[0]
    assert "free at least 32 MB there" in lines[0] and "resume" in lines[0]
    done = complete_count(small_disk)
    assert 2 <= done < len(EXPECTED)
    again = run_study(small_disk, "./slow.toml", env=env)  # still full: refused before any training
    assert again.returncode == 2 and len(error_lines(again.stderr)) == 1 and "no space left" in again.stderr
    assert complete_count(small_disk) == done
    (small_disk / "filler").unlink()
    resumed = run_study(small_disk, "./slow.toml", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trials = finished_trials(small_disk)
    assert Counter(final_key(t) for t in trials if t.state.name == "COMPLETE") == EXPECTED
    assert not [t for t in trials if t.state.name == "RUNNING"]
    _, runs = runs_of(small_disk, "slow")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = Counter(
        (r.data.tags["bench.arm"], int(r.data.tags["bench.seed"]))
        for r in runs
        if r.info.status == "FINISHED" and r.data.tags.get("bench.stage")
    )
    assert finished == EXPECTED  # nothing lost, nothing twice


READER = """
import os, sys, time
path = sys.argv[1]
if sys.argv[2] == "after-it-appears":  # open the store the moment bench's file exists
    while not os.path.exists(path):
        time.sleep(0.005)
import mlflow
mlflow.set_tracking_uri(f"sqlite:///{path}")
print(len(mlflow.search_runs(search_all_experiments=True)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["at-once", "after-it-appears"])
def test_new_store_opened_at_once_by_a_study_and_a_reader(tmp_path, data_dir, when):
    one_trial_each = QUICK_STUDY.replace("seeds = 3", "seeds = 1", 1)
    (tmp_path / "slow.toml").write_text(one_trial_each)
    env = {**os.environ, "BENCH_DATA_DIR": data_dir}
    path = tmp_path / "mlflow.db"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), when], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    study = start_study(tmp_path, "./slow.toml", env=env)
    out, err = study.communicate(timeout=300)
    reader_out, reader_err = reader.communicate(timeout=120)
    assert reader.returncode == 0, reader_err
    assert study.returncode == 0 and "Traceback" not in err, out + err
    _, runs = runs_of(tmp_path, "slow")
    assert Counter(r.info.status for r in runs if r.data.tags.get("bench.stage")) == Counter({"FINISHED": 2})


BAD = "/proc/bench-cannot-write-here"


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (
            ["--data-dir", f"{BAD}/data"],
            {},
            f"--data-dir (CIFAR-10 is downloaded there when missing): cannot create folder {BAD}",
        ),
        ([], {"BENCH_CACHE_DIR": f"{BAD}/cache"}, f"BENCH_CACHE_DIR (the decoded-image cache): cannot create folder {BAD}"),
        (["--storage", f"sqlite:///{BAD}/optuna.db"], {}, f"--storage sqlite:///{BAD}/optuna.db (its folder): cannot create"),
        (["--tracking-uri", f"sqlite:///{BAD}/mlflow.db"], {}, f"folder {BAD} does not exist"),
        ([], {"FILE": "optuna"}, "the Optuna journal folder: "),
        ([], {"FILE": "mlruns"}, "the MLflow artifact folder: "),
    ],
)
def test_unwritable_output_paths_are_one_line_exit_2_before_any_work(
    tmp_path, monkeypatch, capsys, data_dir, args, env, expected
):
    (tmp_path / "slow.toml").write_text(QUICK_STUDY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_DATA_DIR", data_dir)
    for key, value in env.items():
        if key == "FILE":  # a file where the store's folder must be
            (tmp_path / value).write_text("not a folder")
        else:
            monkeypatch.setenv(key, value)
    assert main(["study", "./slow.toml", "--profile", "smoke", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not finished_trials(tmp_path)  # nothing claimed, nothing trained
