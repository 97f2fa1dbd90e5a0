"""How many trials a process trains at once (--pack) and how many worker processes share a device (--workers)
when the user does not say: the best concurrency `bench speed` measured for the nearest model on this device
kind, else a built-in default that says where it comes from."""

from __future__ import annotations

from .throughput import USABLE, load_table, table_path

MEASURED_MODEL = {"resnet": "resnet20", "cnn": "cnn", "mlp": "mlp", "linear": "mlp"}  # `bench speed --model` of each
BUILTIN = {
    "cuda": (
        8,
        1,
        "built-in default for CUDA (no `bench speed` table here yet): 8 trials of one architecture per "
        "process, side by side on CUDA streams, 1 process",
    ),
    "cpu": (1, 1, "built-in default for the CPU: one trial at a time (packing does not pay on a compute-bound CPU)"),
}


def default_concurrency(model: str, device_type: str) -> tuple[int, int, str]:
    """(pack, workers, where the choice comes from) for trials of `model` ("mlp", "cnn", "resnet", ...) on
    `device_type` ("cpu" or "cuda")."""
    kind = "cuda" if device_type == "cuda" else "cpu"
    table = load_table(kind)
    models = table.get("models", {})
    measured = MEASURED_MODEL.get(model, "cnn")
    measured = measured if measured in models else "cnn"  # a model not measured here: the small CNN's figure
    entry = models.get(measured)
    rows = [r for r in (entry or {}).get("rows", []) if "error" not in r and r["variant"] in USABLE[kind]]
    if not rows:
        return BUILTIN[kind]
    best = max(rows, key=lambda r: r["images_per_s"])
    one = next((r for r in rows if r["variant"] == ("graph" if kind == "cuda" else "eager")), best)
    times = best["images_per_s"] / one["images_per_s"]
    why = (
        f"measured by bench speed on {table.get('device', kind)} ({table.get('date', '?')}, {table_path(kind)}): "
        f"{best['label']} trains {times:.1f}x the images/s of one trial for {MEASURED_MODEL.get(model, 'cnn')}"
    )
    return best["k"], best["n"], why
