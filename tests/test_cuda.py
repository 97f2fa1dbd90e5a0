"""The GPU engine on a real GPU (skipped without CUDA; `bench gpu-check` runs the same checks): a captured step
trains like the eager one for every optimizer, steady-state steps never synchronise with the host, and trials
side by side on streams follow their lone curves."""

from __future__ import annotations

import pytest
import torch

from bench.engine.optim import OPTIMIZERS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run `bench gpu-check` on one)"),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_graph_and_eager_steps_train_alike(cifar, optimizer):
    from bench.perf.cudacheck import GRAPH_TOLERANCE, graph_vs_eager

    row = graph_vs_eager(cifar, {"model": "resnet", "depth": 8, "width": 8}, optimizer)
    assert row["graph"] == "captured" and row["max_rel_diff"] <= GRAPH_TOLERANCE, row


@pytest.mark.parametrize("model", [{"model": "resnet", "depth": 8}, {"model": "mlp", "dropout": 0.3}])
def test_steady_state_steps_never_synchronise(cifar, model):
    from bench.perf.cudacheck import sync_free

    row = sync_free(cifar, model)
    assert row["eager"] == row["graph"] == "no sync", row


def test_side_by_side_graphs_follow_their_lone_curves(cifar):
    from bench.perf.cudacheck import streams_match_alone

    row = streams_match_alone(cifar, {"model": "cnn", "width": 8, "dropout": 0.2})
    assert row["ok"], row
