"""Where a trial runs and what its record says about it: the device, bf16 autocast on CUDA, the code version."""

from __future__ import annotations

import platform
import subprocess
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from bench.config import ConfigError, TrialConfig, as_dict
from bench.versions import library_versions


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when present, else cpu; a CUDA device asked for where there is none is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda requested but CUDA is not available; use device=cpu or device=auto")
    return device


def git_commit() -> str:
    """The code version (12 hex digits, "-dirty" with uncommitted changes to tracked files), or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def autocast_for(device: torch.device):
    """A context-manager factory: bf16 autocast on CUDA (no weight cache, so it can be captured in a graph),
    nothing elsewhere."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext


def device_label(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return f"{device} ({name})"


def provenance(cfg: TrialConfig, device: torch.device, source: str, digest: str, history: dict[str, list]) -> dict[str, Any]:
    """The record keys every trial shares: where and with what it ran, its config and its history."""
    return {
        "device": device_label(device),
        "torch_version": torch.__version__,
        **{f"versions.{k}": v for k, v in library_versions().items()},
        "git_commit": git_commit(),
        "data_source": source,
        "data_digest": digest,
        **{f"config.{k}": v for k, v in as_dict(cfg).items()},
        **{f"history.{k}": v for k, v in history.items()},
    }
