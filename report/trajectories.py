"""The optimizer study's `trajectories` extra (format: report/frame.py, "Extras"): every optimizer on
2-D surfaces from one start, each at its own best learning rate. Descriptive only: a table of path
measurements, a sentence on what each surface favours and who won there, and a CS231n-style figure
(contours with paths, loss per step); no verdict rests on it."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.colors import LogNorm

from .figures import FigureMaker
from .section import Figure, Link, Table, fmt, short

FRACTION = 1e-3  # "reached the minimum": loss at or below this fraction of the starting loss
FLOOR = 1e-12  # the loss plot's floor, relative to the starting loss: exact zeros and 1e-160 read as "converged"


def path_stats(opt: dict[str, Any], steps: int, steep: list[float] | None = None) -> dict[str, float]:
    """Measurements of one optimizer's path: lr, steps taken, diverged (0/1), final loss, path length,
    reversals (sign changes of the step along the surface's steep direction `steep`, default y: the zig-zag
    across the valley) and the first step at which the loss is at or below FRACTION of the starting loss
    (NaN if never)."""
    path = np.asarray(opt.get("path") or [], float).reshape(-1, 2)
    losses = [math.nan if v is None else float(v) for v in opt.get("loss") or []]
    finite = [v for v in losses if math.isfinite(v)]
    axis = np.asarray(steep or [0.0, 1.0], float)
    dy = np.diff(path, axis=0) @ axis if len(path) > 1 else np.array([])
    signs = np.sign(dy[np.abs(dy) > 1e-12])
    start = losses[0] if losses else math.nan
    reach = next((i for i, v in enumerate(losses) if math.isfinite(v) and v <= FRACTION * start), math.nan)
    return {
        "lr": float(opt.get("lr", math.nan)),
        "steps": float(len(path) - 1),
        "diverged": float(len(path) - 1 < steps or not losses or not math.isfinite(losses[-1])),
        "final loss": finite[-1] if finite else math.nan,
        "path length": float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()) if len(path) > 1 else math.nan,
        "reversals": float((signs[1:] != signs[:-1]).sum()) if len(signs) > 1 else 0.0,
        "steps to target": float(reach),
    }


def all_stats(traj: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """{surface: {optimizer: path_stats}}."""
    steps = int(traj.get("steps", 0))
    return {
        s: {o: path_stats(v, steps, surf.get("steep")) for o, v in surf.get("optimizers", {}).items()}
        for s, surf in traj.get("surfaces", {}).items()
    }


def lr_text(opt: dict[str, Any]) -> str:
    """ "0.0316", or "1e+04 (edge of the grid 1e-04..1e+04)" when the widened grid's best still sits on its edge."""
    text = f"{float(opt.get('lr', math.nan)):.3g}"
    grid = opt.get("lr_grid")
    return text + (f" (edge of the grid {grid[0]:.0e}..{grid[1]:.0e})" if opt.get("lr_on_edge") and grid else "")


def winners(traj: dict[str, Any]) -> dict[str, str]:
    """{surface: the optimizer with the lowest final loss there (diverged paths excluded)}."""
    out = {}
    for surface, per in all_stats(traj).items():
        ok = {o: st["final loss"] for o, st in per.items() if not st["diverged"] and math.isfinite(st["final loss"])}
        if ok:
            out[surface] = min(ok, key=ok.get)
    return out


def table(traj: dict[str, Any]) -> Table:
    """One row per surface and optimizer; path length and y reversals also relative to plain SGD."""
    link = [Link(short(traj["run_id"]), traj["url"])] if traj.get("run_id") and traj.get("url") else []
    rows = []
    surfaces = traj.get("surfaces", {})
    for surface, per_opt in all_stats(traj).items():
        sgd = per_opt.get("sgd", {})
        for opt, st in per_opt.items():
            rel = st["path length"] / sgd["path length"] if sgd.get("path length") else math.nan
            rows.append(
                [
                    surface,
                    opt,
                    lr_text(surfaces[surface]["optimizers"][opt]),
                    f"{int(st['steps'])}" + (" (diverged)" if st["diverged"] else ""),
                    fmt(st["final loss"]),
                    fmt(st["path length"]) + (f" (×{fmt(rel)} sgd)" if opt != "sgd" else ""),
                    f"{int(st['reversals'])}",
                    fmt(st["steps to target"]),
                    link,
                ]
            )
    return Table(
        f"Trajectories on 2-D surfaces ({traj.get('steps', '?')} steps, same start, each optimizer at its "
        "own best learning rate) — descriptive, not part of the verdict",
        [
            "surface",
            "optimizer",
            "lr",
            "steps",
            "final loss",
            "path length",
            "steep-axis reversals",
            f"steps to {FRACTION:g}× start loss",
            "run (MLflow)",
        ],
        rows,
        "steep-axis reversals: how often the step along the surface's steep direction changes sign (the zig-zag "
        "across the valley); path length: sum of the step lengths (a straight line to the minimum is shortest). "
        "Learning rates were chosen per optimizer on a log grid (lowest final loss), widened a decade at a time while "
        "the best sat on an edge, so these are best cases. What each surface favours by construction: "
        + "; ".join(f"{name}: {surf.get('favours', '–')}" for name, surf in surfaces.items())
        + ".",
    )


def notes(traj: dict[str, Any]) -> str:
    """Oscillation damping on the quadratic (the rotated one when present: SGD and momentum behave the same on both),
    then which optimizer ended lowest on each surface beside what the surface favours by construction."""
    stats = all_stats(traj)
    surface = next((s for s in ("rotated", "quadratic") if s in stats), next(iter(stats), None))
    per = stats.get(surface, {}) if surface else {}
    if "sgd" not in per:
        return "The trajectories extra has no plain-SGD path to compare with."
    parts = [
        f"{o} {int(per[o]['reversals'])} (path {fmt(per[o]['path length'])}, "
        f"{fmt(per[o]['steps to target'])} steps to {FRACTION:g}× start loss)"
        for o in ("momentum", "nesterov")
        if o in per
    ]
    sgd = per["sgd"]
    fewer = [o for o in ("momentum", "nesterov") if o in per and per[o]["reversals"] < sgd["reversals"]]
    verdict = (
        "fewer direction reversals than SGD for " + ", ".join(fewer) + ": consistent with damping"
        if fewer
        else "no fewer direction reversals than SGD: the damping is not visible as fewer reversals here"
    )
    surfaces = traj.get("surfaces", {})
    won = "; ".join(
        f"{s}: {o}" + (f" (this surface favours {surfaces[s]['favours'].split(':')[0]})" if surfaces[s].get("favours") else "")
        for s, o in winners(traj).items()
    )
    return (
        f"Oscillation, measured on the 2-D {surface} surface (descriptive; the verdict above rests on the CIFAR-10 "
        f"runs): reversals along its steep axis in {int(traj.get('steps', 0))} steps: sgd {int(sgd['reversals'])} "
        f"(path {fmt(sgd['path length'])}, {fmt(sgd['steps to target'])} steps to {FRACTION:g}× start loss); "
        + "; ".join(parts)
        + f" — {verdict}. Each optimizer runs at the learning rate that is best for it on "
        "that surface; plain SGD's rate is capped by the steep axis (on the quadratic it diverges above 2/25 = 0.08), "
        "so its progress along the shallow axis is slow. A longer path means overshoot, not necessarily oscillation."
        + (f" Lowest final loss per surface: {won}." if won else "")
    )


def figure(figs: FigureMaker, name: str, traj: dict[str, Any]) -> Figure | None:
    """Per surface: log-spaced loss contours with every optimizer's path (start ★, end ●, minimum ✕), and the
    loss per step (log)."""
    surfaces = traj.get("surfaces", {})
    if not figs.enabled or not surfaces:
        return None
    fig, axes = plt.subplots(
        len(surfaces), 2, figsize=(12.5, 4.6 * len(surfaces)), squeeze=False, gridspec_kw={"width_ratios": [1.35, 1]}
    )
    opts = list(dict.fromkeys(o for s in surfaces.values() for o in s.get("optimizers", {})))
    colours = dict(zip(opts, sns.color_palette("colorblind", len(opts))))
    for (ax, lax), (sname, surf) in zip(axes, surfaces.items()):
        g = surf.get("grid", {})
        x, y, z = (np.asarray(g.get(k, []), float) for k in ("x", "y", "z"))
        if z.size and np.nanmax(z) > 0:
            lo = max(np.nanmin(z[z > 0]), np.nanmax(z) * 1e-4)
            levels = np.geomspace(lo, np.nanmax(z), 16)
            ax.contourf(x, y, np.clip(z, lo, None), levels=levels, norm=LogNorm(), cmap="Greys", alpha=0.35)
            ax.contour(x, y, np.clip(z, lo, None), levels=levels, norm=LogNorm(), colors="0.55", linewidths=0.5)
            ax.set_xlim(x.min(), x.max())
            ax.set_ylim(y.min(), y.max())
        for opt, v in surf.get("optimizers", {}).items():
            path = np.asarray(v.get("path") or [], float).reshape(-1, 2)
            if not len(path):
                continue
            ax.plot(path[:, 0], path[:, 1], "-", color=colours[opt], linewidth=1.3, alpha=0.9, label=f"{opt} (lr {lr_text(v)})")
            ax.plot(path[-1, 0], path[-1, 1], "o", color=colours[opt], markersize=6, markeredgecolor="black")
            loss = np.asarray([np.nan if x is None else x for x in v.get("loss") or []], float)
            floor = loss[0] * FLOOR if len(loss) and loss[0] > 0 else 0.0  # the same start: the same floor for all
            lax.plot(np.arange(len(loss)), np.clip(loss, floor, None), color=colours[opt], linewidth=1.3, label=opt)
        if surf.get("start"):
            ax.plot(*surf["start"], "*", color="black", markersize=13, label="start")
        if surf.get("minimum"):
            ax.plot(*surf["minimum"], "X", color="crimson", markersize=9, label="minimum")
        favours = surf.get("favours", "").split(":")[0]
        ax.set(title=surf.get("label", sname) + (f"\nfavours {favours}" if favours else ""), xlabel="x", ylabel="y")
        lax.set(title=f"{sname}: loss per step", xlabel="step", ylabel="loss (log)", yscale="log")
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    return figs.save(
        fig,
        name,
        "Optimizer trajectories on 2-D surfaces",
        "every optimizer from the same start (★) with the same step budget, each at its own best learning "
        "rate; ● = where it ends, ✕ = the minimum; contours are log-spaced. A path that leaves the plotted "
        "area or diverges ends early. Each panel's title says which optimizers its surface favours by construction: "
        "the axis-aligned quadratic suits per-coordinate (adaptive) steps, its rotated copy suits neither family.",
    )
