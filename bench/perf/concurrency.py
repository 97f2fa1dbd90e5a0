"""How many trials a process trains at once (--pack) and how many worker processes share a device
(--workers) when the user does not say: read from measured throughput where there is one."""

from __future__ import annotations


def default_concurrency(model: str, device_type: str) -> tuple[int, int, str]:
    """(pack, workers, where the choice comes from) for trials of `model` ("mlp", "cnn", "resnet", ...)
    on `device_type` ("cpu" or "cuda")."""
    if device_type == "cuda":
        return 8, 1, "built-in default for CUDA: 8 trials of one architecture per process, 1 process"
    return 1, 1, "built-in default for the CPU: one trial at a time (packing does not pay on a compute-bound CPU)"
