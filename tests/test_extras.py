"""The optimizer-trajectory extra: real registry optimizers on 2-D surfaces."""

import math

from bench.engine.components import OPTIMIZERS
from bench.study.extras import SURFACES, descend, trajectories


def test_descend_reaches_the_quadratic_minimum_and_stops_on_divergence():
    _, f, start, minimum, _ = SURFACES["quadratic"]
    path, losses = descend("sgd", f, start, lr=0.05)
    assert len(path) == len(losses) == 101 and losses[-1] < 1e-3 * losses[0]
    assert math.dist(path[-1], minimum) < 0.1
    path, losses = descend("sgd", f, start, lr=1.0)  # 1 - 25 lr < -1: the y coordinate blows up
    assert len(path) < 101 and (losses[-1] is None or losses[-1] > 1e12)


def test_trajectories_cover_every_optimizer_and_surface():
    out = trajectories(grid_points=10)
    assert set(out["surfaces"]) == set(SURFACES)
    for surface in out["surfaces"].values():
        assert set(surface["optimizers"]) == set(OPTIMIZERS.names())
        assert len(surface["grid"]["z"]) == 10 and len(surface["grid"]["z"][0]) == 10
        for run in surface["optimizers"].values():
            assert run["path"][0] == surface["start"] and len(run["path"]) == out["steps"] + 1
            assert run["loss"][-1] < run["loss"][0]  # the best grid lr makes progress for everyone
    sgd = out["surfaces"]["quadratic"]["optimizers"]["sgd"]
    assert sgd["lr"] < 2 / 25  # SGD is only stable below 2 / (largest curvature)
