"""The exact CPU solver's tie rule (README, "Ties"): constant costs give the identity, and where
the solver picks among equally cheap columns it takes the lowest index. Every answer is also
checked to be optimal: the rule only chooses among optima."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import scipy_optimum

import immiscible_ops as io


def total(cost, cols):
    return float(cost.double()[torch.arange(cost.shape[0]), cols].sum())


@pytest.mark.parametrize("n,m", [(1, 1), (2, 2), (7, 7), (8, 8), (33, 33), (257, 257),
                                 (1, 9), (5, 9), (31, 64), (100, 1000)])
@pytest.mark.parametrize("solver", ["exact", "auto"])
def test_constant_cost_gives_the_identity(n, m, solver, gen):
    value = float(torch.randn((), generator=gen)) * 10  # any constant: negative, fractional
    cost = torch.full((n, m), value, dtype=torch.float64)
    assert io.linear_assignment(cost, solver=solver).tolist() == list(range(n))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_constant_cost_identity_every_dtype_and_batch(dtype):
    cost = torch.ones(3, 4, 12, 12, dtype=dtype)
    assert torch.equal(io.linear_assignment(cost), torch.arange(12).expand(3, 4, 12))


def test_constant_cost_identity_without_avx2():
    script = ("import torch, immiscible_ops as io; "
              "print(io.linear_assignment(torch.ones(9, 9)).tolist() == list(range(9)), "
              "io.linear_assignment(torch.ones(4, 11)).tolist() == list(range(4)))")
    env = dict(os.environ, IMMISCIBLE_DISABLE_AVX2="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_column_constant_cost_gives_the_identity(gen):
    # Every assignment of a square column-constant cost has the same total.
    for n in (5, 16, 41):
        cols = torch.rand(1, n, generator=gen, dtype=torch.float64).expand(n, n).contiguous()
        assert io.linear_assignment(cols).tolist() == list(range(n))


def test_rectangular_column_constant_takes_the_cheapest_columns_lowest_first(gen):
    # Columns priced 0, 1, 2, ...: the cheapest n columns are the first n; rows take them in order.
    for n, m in [(4, 7), (9, 30)]:
        cost = torch.arange(m, dtype=torch.float64).expand(n, m).contiguous()
        assert io.linear_assignment(cost).tolist() == list(range(n))


def test_independent_ties_take_the_lowest_column(gen):
    # Row i has two equally cheap columns of its own, 2i and 2i+1: it gets 2i.
    n = 12
    cost = torch.full((n, 2 * n), 5.0, dtype=torch.float64)
    cost[torch.arange(n), 2 * torch.arange(n)] = 1.0
    cost[torch.arange(n), 2 * torch.arange(n) + 1] = 1.0
    assert io.linear_assignment(cost).tolist() == list(range(0, 2 * n, 2))


@pytest.mark.parametrize("values", [2, 4, 100])
def test_tied_optima_stay_optimal(values, gen):
    for n, m in [(40, 40), (33, 50)]:
        cost = torch.randint(0, values, (n, m), generator=gen).double()
        out = io.linear_assignment(cost)
        assert len(set(out.tolist())) == n
        assert total(cost, out) == scipy_optimum(cost)
