"""CPU forward/reverse auction on rectangular costs (n < m, no dummy rows) against scipy."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from scipy.optimize import linear_sum_assignment

import immiscible_ops as io
from immiscible_ops.reference import assignment_cost


def scipy_total(cost):
    rows, cols = linear_sum_assignment(cost.double().numpy())
    return float(cost.double()[rows, cols].sum())


def rectangular_cost(kind, n, m, gen):
    if kind == "uniform":
        return torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "integer":
        return torch.randint(0, 1000, (n, m), generator=gen).double()
    if kind == "ties":
        return torch.randint(0, 4, (n, m), generator=gen).double()
    if kind == "equal":
        return torch.full((n, m), 3.0, dtype=torch.float64)
    if kind == "offset":  # bid on a shifted copy
        return 1e6 + torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "distance":  # bid in place: an offset of a few ranges, as cdist costs have
        return 60.0 + 40.0 * torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "negative":
        return torch.rand(n, m, generator=gen, dtype=torch.float64) * 10.0 - 5.0
    raise AssertionError(kind)


def assert_auction_optimal(cost, exact):
    out = io.linear_assignment(cost, solver="auction")
    assert len(set(out.tolist())) == cost.shape[0]
    got, best = float(assignment_cost(cost, out)), scipy_total(cost)
    tol = 0.0 if exact else 1e-6 * abs(best) + 1e-9
    assert got <= best + tol, (got, best)


@pytest.mark.parametrize("kind", ["uniform", "integer", "ties", "equal", "offset", "distance",
                                  "negative"])
@pytest.mark.parametrize("shape", [(17, 18), (13, 26), (24, 96), (9, 576), (1, 7), (1, 1), (5, 5)])
def test_rectangular_auction_matches_scipy(kind, shape):
    gen = torch.Generator().manual_seed(torch.seed())
    cost = rectangular_cost(kind, *shape, gen)
    assert_auction_optimal(cost, exact=kind in ("integer", "ties", "equal"))


def test_bidding_war_hands_over_to_exact_solver():
    # A work budget of a fifth of a pass over the matrix runs out in the first phase; the exact
    # solver must then return the optimum (the budget is read once per process).
    script = textwrap.dedent("""
        import torch, immiscible_ops as io
        from scipy.optimize import linear_sum_assignment
        gen = torch.Generator().manual_seed(3)
        for n, m in [(64, 256), (40, 40)]:
            cost = torch.randint(0, 4, (n, m), generator=gen).double()
            cost[0, :m // 2] = float("inf")
            out = io.linear_assignment(cost, solver="auction")
            rows, cols = linear_sum_assignment(cost.numpy())
            assert len(set(out.tolist())) == n
            assert float(cost[torch.arange(n), out].sum()) == float(cost.numpy()[rows, cols].sum())
        print("ok")
    """)
    env = dict(os.environ, IMMISCIBLE_AUCTION_MAX_PASSES="0.2")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_rectangular_forbidden_feasible():
    gen = torch.Generator().manual_seed(torch.seed())
    cost = torch.rand(20, 80, generator=gen, dtype=torch.float64)
    cost[torch.rand(20, 80, generator=gen) < 0.5] = math.inf
    cost[torch.arange(20), torch.arange(20) * 4] = 0.5  # keeps a feasible assignment
    out = io.linear_assignment(cost, solver="auction")
    assert torch.isfinite(cost[torch.arange(20), out]).all()
    assert float(assignment_cost(cost, out)) <= scipy_total(cost) + 1e-6


def test_rectangular_forbidden_infeasible():
    cost = torch.rand(6, 40, dtype=torch.float64)
    cost[:, 3:] = math.inf  # six rows, three usable columns
    with pytest.raises(ValueError, match="no feasible assignment"):
        io.linear_assignment(cost, solver="auction")


def test_assign_more_noise_than_images_auction():
    gen = torch.Generator().manual_seed(torch.seed())
    x = torch.randn(32, 12, generator=gen)
    noise = torch.randn(128, 12, generator=gen)
    idx = io.assign(x, noise, solver="auction", precision="fp32")
    cost = torch.cdist(x.double(), noise.double())  # metric="l2" is the plain distance
    assert len(set(idx.tolist())) == 32
    assert float(assignment_cost(cost, idx)) <= scipy_total(cost) * (1 + 1e-4)


def test_noise_pool_auction_matches_exact_optimum():
    x = torch.randn(24, 3, 4, 4)
    seed = torch.seed()
    picked = {}
    for solver in ("exact", "auction"):
        gen = torch.Generator().manual_seed(seed)
        noise = io.immiscible_noise(x, method="pool", generator=gen, solver=solver)
        picked[solver] = float(((x.double() - noise.double()) ** 2).sum())
    # Same seeded pool for both; the exact pick is scipy-optimal (tests/noise/test_noise.py).
    assert picked["auction"] <= picked["exact"] * (1 + 1e-3) + 1e-6
