"""Study extras: measurements a study makes once per execution besides its trials, logged
to MLflow as an artifact of a run tagged bench.kind=extra (the report reads them).

`trajectories`: every optimizer of the registry on two 2-D surfaces (an ill-conditioned
quadratic and a Rosenbrock-like valley) from the same start with the same step budget,
each at its own best learning rate (grid-searched on that surface), as CS231n's
optimizer animations show them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from bench.config import make_config
from bench.engine.components import OPTIMIZERS
from bench.registry import Registry

EXTRAS = Registry("extra")
STEPS = 100  # optimizer steps per path: the same budget for every optimizer
LR_GRID = [10 ** (e / 4) for e in range(-16, 5)]  # 1e-4 .. 10, four per decade

Surface = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SURFACES: dict[str, tuple[str, Surface, tuple[float, float], tuple[float, float], tuple[float, float, float, float]]] = {
    # name: (label, f(x, y), start, minimum, plot bounds x0, x1, y0, y1)
    "quadratic": (
        "ill-conditioned quadratic 0.5*(x^2 + 25 y^2)",
        lambda x, y: 0.5 * (x * x + 25 * y * y),
        (-9.0, 1.5),
        (0.0, 0.0),
        (-10.0, 2.0, -2.5, 2.5),
    ),
    "rosenbrock": (
        "Rosenbrock-like valley (1-x)^2 + 10 (y-x^2)^2",
        lambda x, y: (1 - x) ** 2 + 10 * (y - x * x) ** 2,
        (-1.5, 2.0),
        (1.0, 1.0),
        (-2.0, 2.0, -1.0, 3.0),
    ),
}


def descend(name: str, f: Surface, start: tuple[float, float], lr: float, steps: int = STEPS) -> tuple[list, list]:
    """Path [(x, y)] and losses of optimizer `name` (the registry's own) on f from start."""
    p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS.get(name)([p], make_config({"optimizer": name, "lr": lr, "weight_decay": 0.0, "momentum": 0.9}))
    path, losses = [[float(v) for v in p.detach()]], [float(f(*p.detach()))]
    for _ in range(steps):
        opt.zero_grad()
        loss = f(p[0], p[1])
        loss.backward()
        opt.step()
        value = float(f(*p.detach()))
        path.append([float(v) for v in p.detach()])
        losses.append(value if math.isfinite(value) else None)
        if not math.isfinite(value) or value > 1e12:
            break  # diverged: the path ends here
    return path, losses


def best_lr(name: str, f: Surface, start: tuple[float, float]) -> float:
    """The grid learning rate with the lowest final loss (diverged paths lose)."""

    def final(lr: float) -> float:
        _, losses = descend(name, f, start, lr)
        return losses[-1] if losses[-1] is not None and len(losses) == STEPS + 1 else math.inf

    return min(LR_GRID, key=final)


@EXTRAS.register("trajectories", "every optimizer on 2-D surfaces at its best learning rate, same step budget")
def trajectories(grid_points: int = 80) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": STEPS, "surfaces": {}}
    for sname, (label, f, start, minimum, (x0, x1, y0, y1)) in SURFACES.items():
        xs, ys = (
            torch.linspace(x0, x1, grid_points, dtype=torch.float64),
            torch.linspace(y0, y1, grid_points, dtype=torch.float64),
        )
        z = f(xs[None, :], ys[:, None])  # z[i][j] = f(x[j], y[i])
        optimizers = {}
        for oname in OPTIMIZERS.names():
            lr = best_lr(oname, f, start)
            path, losses = descend(oname, f, start, lr)
            optimizers[oname] = {"lr": lr, "path": path, "loss": losses}
        out["surfaces"][sname] = {
            "label": label,
            "start": list(start),
            "minimum": list(minimum),
            "grid": {"x": xs.tolist(), "y": ys.tolist(), "z": z.tolist()},
            "optimizers": optimizers,
        }
    return out
