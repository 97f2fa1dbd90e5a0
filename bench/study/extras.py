"""Study extras: measurements a study makes once per execution besides its trials, logged
to MLflow as an artifact of a run tagged bench.kind=extra (the report reads them).

`trajectories`: every optimizer of the registry on three 2-D surfaces from the same start with
the same step budget, each at its own best learning rate (searched on a grid that is widened
while the best value sits on its edge), as CS231n's optimizer animations show them. The surfaces
are chosen so that no family wins by construction: an axis-aligned ill-conditioned quadratic
(where per-coordinate adaptive steps remove the conditioning), the same quadratic rotated by 45
degrees (where they cannot, and plain SGD and momentum behave exactly as on the first) and a
Rosenbrock-like curved valley.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.engine.components import OPTIMIZERS
from bench.engine.rules import make_config
from bench.registry import Registry

EXTRAS = Registry("extra")
STEPS = 100  # optimizer steps per path: the same budget for every optimizer
PER_DECADE = 4  # learning rates per decade on the search grid
GRID = (-4, 1)  # the first grid: 1e-4 .. 10 (decades)
LIMITS = (-8, 4)  # the grid is widened a decade at a time while its best value sits on an edge, up to 1e-8 .. 1e4
ANGLE = math.pi / 4  # the rotated quadratic's steep axis lies at 45 degrees to both coordinates

Surface = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _quadratic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x * x + 25 * y * y)  # curvatures 1 and 25: condition number 25


def _rotated(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    c, s = math.cos(ANGLE), math.sin(ANGLE)
    return _quadratic(c * x + s * y, -s * x + c * y)  # the quadratic in coordinates turned by ANGLE


def _rotate(p: tuple[float, float]) -> tuple[float, float]:
    c, s = math.cos(ANGLE), math.sin(ANGLE)
    return (c * p[0] - s * p[1], s * p[0] + c * p[1])


@dataclass(frozen=True)
class Spec:
    label: str  # the surface as a formula
    f: Surface
    start: tuple[float, float]
    minimum: tuple[float, float]
    bounds: tuple[float, float, float, float]  # plot area x0, x1, y0, y1
    steep: tuple[float, float]  # unit vector of the steep direction: oscillation is counted along it
    favours: str  # which optimizers the surface favours by its construction, and why


SURFACES: dict[str, Spec] = {
    "quadratic": Spec(
        "ill-conditioned quadratic 0.5*(x^2 + 25 y^2), axis-aligned",
        _quadratic,
        (-9.0, 1.5),
        (0.0, 0.0),
        (-10.0, 2.0, -2.5, 2.5),
        (0.0, 1.0),
        "per-coordinate adaptive steps (AdaGrad, RMSProp, Adam): its steep and shallow directions are the coordinate "
        "axes, so scaling each coordinate's step by its own gradient removes the ill-conditioning",
    ),
    "rotated": Spec(
        "the same quadratic rotated by 45 degrees",
        _rotated,
        _rotate((-9.0, 1.5)),
        (0.0, 0.0),
        (-9.0, 3.0, -8.0, 4.0),
        _rotate((0.0, 1.0)),
        "no family by construction: each coordinate mixes the steep and the shallow direction, so per-coordinate "
        "scaling cannot undo the conditioning; SGD, momentum and Nesterov are rotation-invariant and follow the "
        "axis-aligned paths turned by 45 degrees",
    ),
    "rosenbrock": Spec(
        "Rosenbrock-like valley (1-x)^2 + 10 (y-x^2)^2",
        lambda x, y: (1 - x) ** 2 + 10 * (y - x * x) ** 2,
        (-1.5, 2.0),
        (1.0, 1.0),
        (-2.0, 2.0, -1.0, 3.0),
        (0.0, 1.0),
        "momentum along a curved valley: the gradient points across the valley walls, and speed builds up along the "
        "floor; per-coordinate scaling helps only where the valley runs along an axis",
    ),
}


def descend(name: str, f: Surface, start: tuple[float, float], lr: float, steps: int = STEPS) -> tuple[list, list]:
    """Path [(x, y)] and losses of optimizer `name` (the registry's own) on f from start."""
    return descend_many(name, f, start, [lr], steps)[0]


def descend_many(name: str, f: Surface, start: tuple[float, float], lrs: list[float], steps: int = STEPS) -> list[tuple]:
    """descend() at each learning rate of `lrs`, stepped together: one parameter row and one learning rate per path
    (every update is elementwise, so each row takes exactly the steps it would alone, in one call per step for all)."""
    p = torch.tensor([start] * len(lrs), dtype=torch.float64, requires_grad=True)
    opt = OPTIMIZERS.get(name)([p], make_config({"optimizer": name, "lr": lrs[0], "weight_decay": 0.0, "momentum": 0.9}))
    opt.lr = torch.tensor(lrs, dtype=torch.float32)[:, None]  # a learning rate per row (Optimizer._descend)
    loss = f(p[:, 0], p[:, 1])  # one evaluation per step: the loss after a step is the next step's
    paths = [[point] for point in p.detach().tolist()]
    losses = [[value] for value in loss.detach().tolist()]
    alive = list(range(len(lrs)))
    for _ in range(steps):
        opt.zero_grad()
        loss.sum().backward()  # the rows are independent: each one's gradient is its own path's
        opt.step()
        loss = f(p[:, 0], p[:, 1])
        points, values = p.detach().tolist(), loss.detach().tolist()
        for i in list(alive):
            paths[i].append(points[i])
            losses[i].append(values[i] if math.isfinite(values[i]) else None)
            if not math.isfinite(values[i]) or values[i] > 1e12:
                alive.remove(i)  # diverged: the path ends here (the row steps on, unrecorded)
        if not alive:
            break
    return list(zip(paths, losses))


def _lr(e: int) -> float:
    return 10 ** (e / PER_DECADE)


def best_lr(name: str, f: Surface, start: tuple[float, float]) -> tuple[float, tuple[float, float], bool, tuple[list, list]]:
    """(the grid learning rate with the lowest final loss (diverged paths lose; ties: the smaller lr), the grid's
    (lowest, highest) lr after widening, whether the best still sits on an edge of the widened grid, its path and
    losses)."""
    runs: dict[int, tuple[list, list]] = {}

    def final(e: int) -> float:
        losses = runs[e][1]
        return losses[-1] if losses[-1] is not None and len(losses) == STEPS + 1 else math.inf

    lo, hi = GRID[0] * PER_DECADE, GRID[1] * PER_DECADE
    while True:
        todo = [e for e in range(lo, hi + 1) if e not in runs]  # the grid, then each decade it is widened by
        if todo:
            runs.update(zip(todo, descend_many(name, f, start, [_lr(e) for e in todo])))
        best = min(range(lo, hi + 1), key=lambda e: (final(e), e))
        if best == hi and hi < LIMITS[1] * PER_DECADE:
            hi += PER_DECADE
        elif best == lo and lo > LIMITS[0] * PER_DECADE:
            lo -= PER_DECADE
        else:
            return _lr(best), (_lr(lo), _lr(hi)), best in (lo, hi), runs[best]


@EXTRAS.register("trajectories", "every optimizer on 2-D surfaces at its best learning rate, same step budget")
def trajectories(grid_points: int = 80) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": STEPS, "surfaces": {}}
    for sname, spec in SURFACES.items():
        x0, x1, y0, y1 = spec.bounds
        xs = torch.linspace(x0, x1, grid_points, dtype=torch.float64)
        ys = torch.linspace(y0, y1, grid_points, dtype=torch.float64)
        z = spec.f(xs[None, :], ys[:, None])  # z[i][j] = f(x[j], y[i])
        optimizers = {}
        for oname in OPTIMIZERS.names():
            lr, grid, edge, (path, losses) = best_lr(oname, spec.f, spec.start)
            optimizers[oname] = {"lr": lr, "lr_grid": list(grid), "lr_on_edge": edge, "path": path, "loss": losses}
        out["surfaces"][sname] = {
            "label": spec.label,
            "favours": spec.favours,
            "start": list(spec.start),
            "minimum": list(spec.minimum),
            "steep": list(spec.steep),
            "grid": {"x": xs.tolist(), "y": ys.tolist(), "z": z.tolist()},
            "optimizers": optimizers,
        }
    return out
