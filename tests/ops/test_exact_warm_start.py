"""The exact CPU solver's auction warm start (low-dimensional costs, csrc/cpu/lap_exact.cpp
warm_start_from_auction): every total equals scipy's optimum, on the point clouds that take the
warm start and on the costs it must decline (integer, +inf, far offset), square and batched."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment as scipy_lsa

import immiscible_ops


def point_cloud_cost(n, dim, shift, seed, squared=True):
    g = np.random.default_rng(seed)
    x0 = g.standard_normal((n, dim))
    x1 = g.standard_normal((n, dim)) + shift
    d2 = ((x0[:, None, :] - x1[None, :, :]) ** 2).sum(-1)
    return d2 if squared else np.sqrt(d2)


def assert_optimal(cost: np.ndarray, **kwargs):
    cols = immiscible_ops.linear_assignment(torch.from_numpy(cost), **kwargs)
    cols = cols.numpy()
    n = cost.shape[0]
    assert sorted(cols.tolist()) == list(range(n)), "not a permutation"
    rows, best = scipy_lsa(cost)
    total, optimum = cost[np.arange(n), cols].sum(), cost[rows, best].sum()
    assert total == pytest.approx(optimum, rel=1e-12, abs=1e-9), (total, optimum)


@pytest.mark.parametrize("dim", [1, 2, 3, 8])
@pytest.mark.parametrize("shift", [0.0, 1.0, 4.0])
@pytest.mark.parametrize("n", [12, 97, 400])
def test_point_clouds_optimal(n, dim, shift):
    for seed in range(3):
        assert_optimal(point_cloud_cost(n, dim, shift, seed))
        assert_optimal(point_cloud_cost(n, dim, shift, seed, squared=False))


def test_float32_and_negated_costs_optimal():
    for seed in range(4):
        cost = point_cloud_cost(300, 2, 1.0, seed)
        assert_optimal(cost.astype(np.float32).astype(np.float64))
        assert_optimal(-cost)  # maximization as users write it: every entry negative


def test_near_tied_costs_optimal():
    # fp16-rounded distances: many exact ties, not integers, so the warm start still runs.
    for seed in range(4):
        cost = point_cloud_cost(256, 2, 1.0, seed).astype(np.float16).astype(np.float64)
        assert_optimal(cost)


def test_declined_costs_optimal():
    for seed in range(3):
        cost = point_cloud_cost(200, 2, 1.0, seed)
        assert_optimal(np.round(cost * 10))      # integer: the tie rules stay
        assert_optimal(cost + 1e7)               # far offset: the auction would need a copy
        forbidden = cost.copy()
        forbidden[np.random.default_rng(seed).random(cost.shape) < 0.05] = np.inf
        rows, cols = scipy_lsa(forbidden)        # still feasible at 5 % forbidden
        got = immiscible_ops.linear_assignment(torch.from_numpy(forbidden)).numpy()
        assert forbidden[np.arange(200), got].sum() == pytest.approx(forbidden[rows, cols].sum(), rel=1e-12)


def test_constant_cost_is_still_the_identity():
    cols = immiscible_ops.linear_assignment(torch.full((64, 64), 0.25, dtype=torch.float64))
    assert cols.tolist() == list(range(64))


def test_batched_point_clouds_optimal():
    costs = np.stack([point_cloud_cost(150, 2, 1.0, seed) for seed in range(6)])
    cols = immiscible_ops.linear_assignment(torch.from_numpy(costs)).numpy()
    for cost, col in zip(costs, cols, strict=True):
        rows, best = scipy_lsa(cost)
        assert cost[np.arange(150), col].sum() == pytest.approx(cost[rows, best].sum(), rel=1e-12)
