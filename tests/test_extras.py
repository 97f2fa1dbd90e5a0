"""The optimizer-trajectory extra: real registry optimizers on 2-D surfaces, each at its best learning rate on a
grid widened while the best sits on an edge; the rotated quadratic favours no family by construction."""

import math

import pytest

from bench.engine.components import OPTIMIZERS
from bench.study.extras import LIMITS, SURFACES, best_lr, descend, descend_many, trajectories

ADAPTIVE, MOMENTUM = ("adagrad", "rmsprop", "adam"), ("sgd", "momentum", "nesterov")


@pytest.fixture(scope="module")
def traj():
    return trajectories(grid_points=10)


def final(traj, surface: str, opt: str) -> float:
    return traj["surfaces"][surface]["optimizers"][opt]["loss"][-1]


def test_descend_reaches_the_quadratic_minimum_and_stops_on_divergence():
    spec = SURFACES["quadratic"]
    path, losses = descend("sgd", spec.f, spec.start, lr=0.05)
    assert len(path) == len(losses) == 101 and losses[-1] < 1e-3 * losses[0]
    assert math.dist(path[-1], spec.minimum) < 0.1
    path, losses = descend("sgd", spec.f, spec.start, lr=1.0)  # 1 - 25 lr < -1: the y coordinate blows up
    assert len(path) < 101 and (losses[-1] is None or losses[-1] > 1e12)


def test_the_rotated_quadratic_is_the_quadratic_turned_by_45_degrees():
    q, r = SURFACES["quadratic"], SURFACES["rotated"]
    assert r.f(*map(float, r.start)) == pytest.approx(q.f(*q.start))  # the same start loss
    x, y = r.steep  # one unit along the steep axis costs the steep curvature, 25 * 0.5
    assert r.f(x, y) == pytest.approx(12.5) and r.f(-y, x) == pytest.approx(0.5)


def test_trajectories_cover_every_optimizer_and_surface(traj):
    assert set(traj["surfaces"]) == set(SURFACES)
    for name, surface in traj["surfaces"].items():
        assert set(surface["optimizers"]) == set(OPTIMIZERS.names())
        assert len(surface["grid"]["z"]) == 10 and len(surface["grid"]["z"][0]) == 10
        assert surface["favours"] == SURFACES[name].favours and surface["steep"] == list(SURFACES[name].steep)
        for run in surface["optimizers"].values():
            assert run["path"][0] == surface["start"] and len(run["path"]) == traj["steps"] + 1
            assert run["loss"][-1] < run["loss"][0]  # the best grid lr makes progress for everyone
    sgd = traj["surfaces"]["quadratic"]["optimizers"]["sgd"]
    assert sgd["lr"] < 2 / 25  # SGD is only stable below 2 / (largest curvature)


def test_paths_stepped_together_are_each_the_path_stepped_alone():
    """descend_many: a row per learning rate, diverging ones among them, each exactly its own path."""
    spec = SURFACES["rotated"]
    lrs = [1e-3, 0.03, 0.07, 0.5, 3.0]  # 0.5 and 3.0 diverge for the SGD family (adaptive steps stay bounded)
    for name in OPTIMIZERS.names():
        together = descend_many(name, spec.f, spec.start, lrs)
        alone = [descend(name, spec.f, spec.start, lr) for lr in lrs]
        assert together == alone, name
        lengths = [len(path) for path, _ in alone]
        assert lengths[0] == 101 and (lengths[-1] < 101) == (name in ("sgd", "momentum", "nesterov")), (name, lengths)


def test_a_best_lr_on_the_grid_edge_widens_the_grid(traj):
    for surface in traj["surfaces"].values():
        for run in surface["optimizers"].values():
            lo, hi = run["lr_grid"]
            assert lo <= run["lr"] <= hi
            if run["lr_on_edge"]:  # only where widening reached its limit
                assert hi == pytest.approx(10 ** LIMITS[1]) or lo == pytest.approx(10 ** LIMITS[0])
    ada = traj["surfaces"]["quadratic"]["optimizers"]["adagrad"]
    assert ada["lr"] > 10 and not ada["lr_on_edge"]  # beyond the old grid's top (10), found inside the widened one
    lr, grid, edge, (path, _) = best_lr("sgd", SURFACES["quadratic"].f, SURFACES["quadratic"].start)
    sgd = traj["surfaces"]["quadratic"]["optimizers"]["sgd"]
    assert lr == sgd["lr"] and grid == pytest.approx((1e-4, 10.0)) and not edge and path == sgd["path"]


def test_rotation_changes_nothing_for_sgd_and_momentum_and_removes_the_adaptive_advantage(traj):
    for opt in MOMENTUM:  # rotation-invariant updates: the same lr and the same losses
        q, r = (traj["surfaces"][s]["optimizers"][opt] for s in ("quadratic", "rotated"))
        assert q["lr"] == r["lr"] and r["loss"] == pytest.approx(q["loss"], rel=1e-9, abs=1e-12)
    for opt in ("adagrad", "rmsprop"):  # per-coordinate scaling: exact on the axes, no help once rotated
        assert final(traj, "rotated", opt) > 1e6 * final(traj, "quadratic", opt)
    best = lambda s, family: min(final(traj, s, o) for o in family)  # noqa: E731
    assert best("quadratic", ADAPTIVE) < best("quadratic", MOMENTUM)  # the axis-aligned surface favours adaptive steps
    assert best("rotated", MOMENTUM) <= best("rotated", ADAPTIVE)  # the rotated one does not
