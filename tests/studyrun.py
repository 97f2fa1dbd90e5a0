"""Helpers for tests that run whole studies in subprocesses against real stores."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from bench.study.tracking import experiment_name

SMOKE_SECONDS = 600  # generous bound per smoke study on 2 CPU cores shared with other jobs (under a minute is typical)


def run_study(
    cwd: Path, name: str, *extra: str, env: dict | None = None, timeout: int = SMOKE_SECONDS
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "study", name, "--profile", "smoke", "--no-progress", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runs_of(cwd: Path, study: str, uri: str | None = None):
    client = MlflowClient(uri or f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment_name(study))
    return client, client.search_runs([exp.experiment_id], max_results=5000)


# Trials of a couple of seconds each: long enough that a signal lands inside one and that a
# second worker (which needs a few seconds to start) still finds trials left to run.
SLOW_STUDY = """
name = "slow"
claims = ["dropout"]
[base]
model = "mlp"
depth = 2
width = 256
n_train = 4000
n_val = 200
n_test = 200
epochs = 3
[factors.dropout]
"p0.0" = { dropout = 0.0 }
"p0.5" = { dropout = 0.5 }
[profiles.smoke]
seeds = 3
[profiles.quick]
seeds = 2
[profiles.full]
seeds = 3
"""


# The fault tests' study: six trials of about a second each (on 2 idle cores), so that a fault injected after
# the second still finds four to run, at a fraction of SLOW_STUDY's cost.
QUICK_STUDY = SLOW_STUDY.replace("n_train = 4000", "n_train = 1500").replace("epochs = 3", "epochs = 2")
QUICK_EPOCHS = 2


def finished_trials(cwd: Path, storage_url: str | None = None) -> list:
    """Trials of the slow study's final stage (any state), from the default journal or `storage_url`."""
    if storage_url:
        storage = optuna.storages.get_storage(storage_url)
    elif (cwd / "optuna/studies.journal").exists():
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(cwd / "optuna/studies.journal")))
    else:
        return []
    try:
        study = optuna.load_study(study_name="slow/smoke/final", storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def start_study(cwd: Path, name: str, *extra: str, env: dict | None = None, progress: bool = False) -> subprocess.Popen:
    """`bench study NAME --profile smoke` in the background, with the default SIGINT disposition a terminal's
    foreground process has (a background job of a non-interactive shell inherits it ignored)."""
    import signal

    cmd = [sys.executable, "-m", "bench", "study", name, "--profile", "smoke", *([] if progress else ["--no-progress"]), *extra]
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_until(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    """Poll `predicate` until it holds; fail the test saying `what` did not happen within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 120, alive: subprocess.Popen | None = None) -> None:
    """Until a server listens on 127.0.0.1:`port`; fails at once if the process `alive` exits first."""
    import socket

    def is_open() -> bool:
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"the server meant for port {port} exited with status {alive.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(is_open, timeout, f"a server on 127.0.0.1:{port}", every=0.5)


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started with start_new_session=True, with all its children (a server's workers)."""
    import os
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a leader that already exited
        except ProcessLookupError:
            pass


def complete_count(cwd: Path, storage_url: str | None = None) -> int:
    return sum(t.state.name == "COMPLETE" for t in finished_trials(cwd, storage_url))


def command_lines() -> str:
    """Every process's command line, as `ps` shows them."""
    import glob

    out = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            out.append(Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return "\n".join(out)
