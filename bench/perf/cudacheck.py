"""The GPU engine's own checks, run by `bench gpu-check` and by tests/test_cuda.py on a machine with CUDA: the
captured step trains like the eager one, steady-state steps never synchronise with the host, and trials side by
side on streams follow their lone curves."""

from __future__ import annotations

import time
from typing import Any

import torch

from bench.data import Cifar10
from bench.engine.device import resolve_device
from bench.engine.graph import CapturedStep, graphs_usable
from bench.engine.loop import task_of, train_packed, train_trial
from bench.engine.optim import OPTIMIZERS
from bench.engine.rules import make_config
from bench.engine.trial import Trial

CHECK_STEPS = 50  # steps compared between the graph and the eager path
GRAPH_TOLERANCE = 1e-3  # relative difference allowed between their running losses (bf16, cuDNN's own choices)
SMALL = dict(n_train=10_000, n_val=1000, n_test=1000, eval_train_size=500, probe_size=64, batch_size=128, epochs=1)


def _trial(cfg, data: Cifar10) -> Trial:
    device = resolve_device(cfg.device)
    task = task_of(cfg)
    trial = Trial(cfg, task, task.prepare(cfg, data, device), device)
    trial.begin_epoch()
    return trial


def graph_vs_eager(data: Cifar10, model: dict[str, Any], optimizer: str, steps: int = CHECK_STEPS) -> dict[str, Any]:
    """The same seed trained `steps` steps eagerly and from a captured graph: the running loss after every step,
    compared (relative difference), and whether the graph really was captured."""
    losses = {}
    captured = ""
    for graphs in (False, True):
        cfg = make_config(
            {**SMALL, **model, "optimizer": optimizer, "device": "cuda", "cuda_graphs": graphs, "augment": True, "seed": 3}
        )
        trial = _trial(cfg, data)
        step = CapturedStep(trial.step, [trial.gen], trial.device) if graphs else trial.step
        series = []
        for _ in range(steps):
            step()
            series.append(float(trial.sums["loss"]))
        losses[graphs] = series
        captured = step.label if graphs else captured
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses[False], losses[True]))
    return {
        "model": model,
        "optimizer": optimizer,
        "steps": steps,
        "max_rel_diff": worst,
        "graph": captured,
        "ok": worst <= GRAPH_TOLERANCE and captured == "captured",
    }


def sync_free(data: Cifar10, model: dict[str, Any], steps: int = 20) -> dict[str, Any]:
    """Steady-state steps, eager and replayed, under torch.cuda.set_sync_debug_mode("error"): any synchronising
    call (a host read, a blocking copy) raises. Warm-up and capture happen before the mode is set."""
    out = {"model": model, "steps": steps}
    for graphs in (False, True):
        cfg = make_config({**SMALL, **model, "device": "cuda", "cuda_graphs": graphs, "augment": True, "input_noise": 0.05})
        trial = _trial(cfg, data)
        step = CapturedStep(trial.step, [trial.gen], trial.device) if graphs else trial.step
        for _ in range(5):  # warm-up (and capture) first
            step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(steps):
                step()
            error = ""
        except RuntimeError as exc:
            error = str(exc).splitlines()[0][:200]
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        out["graph" if graphs else "eager"] = error or "no sync"
    out["ok"] = out["graph"] == out["eager"] == "no sync"
    return out


def streams_match_alone(data: Cifar10, model: dict[str, Any], k: int = 3) -> dict[str, Any]:
    """k trials side by side (streams mode, each from its own graph) against each trained alone: curves equal
    up to GRAPH_TOLERANCE."""
    cfgs = [make_config({**SMALL, **model, "device": "cuda", "seed": s, "lr": 0.05 * (s + 1), "epochs": 2}) for s in range(k)]
    t0 = time.perf_counter()
    packed = train_packed(cfgs, progress=False, data=data, mode="streams")
    alone = [train_trial(c, progress=False, data=data) for c in cfgs]
    worst = 0.0
    for a, p in zip(alone, packed):
        for x, y in zip(a["history.val_loss"], p["history.val_loss"]):
            worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    return {
        "model": model,
        "k": k,
        "max_rel_diff": worst,
        "graph": packed[0]["graph"],
        "seconds": time.perf_counter() - t0,
        "ok": worst <= GRAPH_TOLERANCE,
    }


def run_checks(data: Cifar10, out=print) -> list[dict[str, Any]]:
    """Every check, printed as it finishes; the rows for gpu-check.json."""
    rows = []
    if not graphs_usable(resolve_device("cuda"), True):
        rows.append({"check": "graphs", "ok": False, "error": "this torch cannot register a generator with a CUDA graph"})
    for model in ({"model": "resnet", "depth": 20}, {"model": "cnn"}):
        for optimizer in OPTIMIZERS.names():
            row = {"check": "graph_vs_eager", **graph_vs_eager(data, model, optimizer)}
            out(
                f"  graph vs eager  {model['model']:<7} {optimizer:<9} max rel diff {row['max_rel_diff']:.2e}  {row['graph']}  "
                + ("ok" if row["ok"] else "FAILED")
            )
            rows.append(row)
    for model in ({"model": "resnet", "depth": 20}, {"model": "mlp", "dropout": 0.3}):
        row = {"check": "sync_free", **sync_free(data, model)}
        out(
            f"  sync-free       {model['model']:<7} eager: {row['eager']}; graph: {row['graph']}  "
            + ("ok" if row["ok"] else "FAILED")
        )
        rows.append(row)
    row = {"check": "streams_match_alone", **streams_match_alone(data, {"model": "cnn", "dropout": 0.2})}
    out(f"  streams vs alone cnn x{row['k']}  max rel diff {row['max_rel_diff']:.2e}  " + ("ok" if row["ok"] else "FAILED"))
    rows.append(row)
    return rows
