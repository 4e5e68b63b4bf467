"""Bad input: a ValueError naming the argument and the fault, never a crash, hang or wrong answer."""

import math

import pytest
import torch

import immiscible_ops as io

COST_CASES = [
    ("nan", lambda: torch.tensor([[0.0, math.nan], [1.0, 2.0]]), {}, "cost: contains NaN"),
    ("neginf", lambda: torch.tensor([[0.0, -math.inf], [1.0, 2.0]]), {}, "cost: contains -inf"),
    ("infeasible", lambda: torch.tensor([[math.inf, math.inf], [1.0, 2.0]]), {}, "no feasible"),
    ("n_gt_m", lambda: torch.rand(5, 3), {}, r"N=5 > M=3"),
    ("one_dim", lambda: torch.rand(4), {}, "at least 2 dims"),
    ("zero_dim", lambda: torch.tensor(1.0), {}, "at least 2 dims"),
    ("integer", lambda: torch.ones(3, 3, dtype=torch.long), {}, "cost: expected a floating"),
    ("solver", lambda: torch.rand(3, 3), {"solver": "hungarian!"}, "solver: unknown solver"),
    ("tol_negative", lambda: torch.rand(3, 3), {"tol": -1.0}, "tol: expected a positive"),
    ("tol_nan", lambda: torch.rand(3, 3), {"tol": math.nan}, "tol: expected a positive"),
]


@pytest.mark.parametrize("name,make,kwargs,message", COST_CASES, ids=[c[0] for c in COST_CASES])
@pytest.mark.parametrize("solver", ["exact", "auction"])
def test_linear_assignment_rejects(name, make, kwargs, message, solver):
    kwargs = {"solver": solver, **kwargs}
    with pytest.raises(ValueError, match=message):
        io.linear_assignment(make(), **kwargs)


@pytest.mark.parametrize("value", ["0", "-3", "abc", "inf", "nan", "", "64 passes"])
def test_auction_budget_variable_must_be_a_positive_number(monkeypatch, value):
    monkeypatch.setenv("IMMISCIBLE_AUCTION_MAX_PASSES", value)
    cost = torch.rand(4, 6, 6)
    with pytest.raises(ValueError, match="IMMISCIBLE_AUCTION_MAX_PASSES"):
        io.linear_assignment(cost, solver="auction")
    with pytest.raises(ValueError, match="IMMISCIBLE_AUCTION_MAX_PASSES"):
        io.assign(torch.randn(4, 3), torch.randn(6, 3), solver="auction")
    # The kernel itself refuses it too (callers of the raw op skip the Python checks).
    with pytest.raises(RuntimeError, match="IMMISCIBLE_AUCTION_MAX_PASSES"):
        torch.ops.immiscible.solve_batched(cost, "auction", 0.0)
    # The exact solver does not read it.
    assert io.linear_assignment(cost, solver="exact").shape == (4, 6)


def test_auction_budget_variable_accepts_a_positive_number(monkeypatch):
    monkeypatch.setenv("IMMISCIBLE_AUCTION_MAX_PASSES", "2.5")
    out = io.linear_assignment(torch.rand(5, 7), solver="auction")
    assert len(set(out.tolist())) == 5


def test_torch_ops_entry_point_rejects_too():
    with pytest.raises(ValueError, match="contains NaN"):
        torch.ops.immiscible.linear_assignment(torch.tensor([[math.nan]]))


def test_nan_in_one_problem_of_a_batch():
    cost = torch.rand(4, 6, 6)
    cost[3, 2, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        io.linear_assignment(cost)


x8, n8 = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
ASSIGN_CASES = [
    ("noise_int", (x8, torch.ones(8, 3, 4, 4, dtype=torch.int64)), {}, "noise: expected a floating"),
    ("x_int", (torch.ones(8, 3, 4, 4, dtype=torch.int32), n8), {}, "x: expected a floating"),
    ("pool_small", (x8, n8[:5]), {}, "pool of 5 is smaller than the batch of 8"),
    ("trailing", (x8, torch.randn(8, 3, 4, 5)), {}, "noise: trailing shape"),
    ("metric", (x8, n8), {"metric": "cosine"}, "metric: unknown metric"),
    ("precision", (x8, n8), {"precision": "int4"}, "precision: unknown precision"),
    ("solver", (x8, n8), {"solver": "greedy"}, "solver: unknown solver"),
    ("groups_len", (x8, n8), {"groups": torch.zeros(7, dtype=torch.long)}, r"groups: expected shape \[8\]"),
    ("groups_2d", (x8, n8), {"groups": torch.zeros(8, 1, dtype=torch.long)}, r"groups: expected shape \[8\]"),
    ("groups_float", (x8, n8), {"groups": torch.zeros(8)}, "groups: expected integer labels"),
    ("groups_bool", (x8, n8), {"groups": torch.zeros(8, dtype=torch.bool)}, "groups: expected integer"),
    ("scalar", (torch.tensor(1.0), torch.tensor(2.0)), {}, "leading batch dimension"),
    ("nan_image", (torch.full((2, 3), math.nan), torch.randn(2, 3)), {"precision": "fp32"}, "NaN"),
]


@pytest.mark.parametrize("name,args,kwargs,message", ASSIGN_CASES, ids=[c[0] for c in ASSIGN_CASES])
def test_assign_rejects(name, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        io.assign(*args, **kwargs)
    if name != "nan_image":  # the noise draw has the right dtype; only assign's own checks apply
        with pytest.raises(ValueError, match=message):
            torch.ops.immiscible.assign(*args, **{"metric": "l2", "precision": "fp16", **kwargs})


PAIR_CASES = [
    ("dim_mismatch", (torch.randn(3, 4), torch.randn(5, 6)), {}, "y: feature dim 6 differs"),
    ("one_dim", (torch.randn(4), torch.randn(5, 4)), {}, "x: expected at least 2 dims"),
    ("batch", (torch.randn(2, 3, 4), torch.randn(3, 5, 4)), {}, "do not broadcast"),
    ("int", (torch.ones(3, 4, dtype=torch.long), torch.randn(5, 4)), {}, "x: expected a floating"),
    ("metric", (torch.randn(3, 4), torch.randn(5, 4)), {"metric": "cos"}, "metric: unknown"),
    ("precision", (torch.randn(3, 4), torch.randn(5, 4)), {"precision": "fp4"}, "precision: unknown"),
]


@pytest.mark.parametrize("name,args,kwargs,message", PAIR_CASES, ids=[c[0] for c in PAIR_CASES])
def test_pairwise_distance_rejects(name, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        io.pairwise_distance(*args, **kwargs)


def test_immiscible_noise_rejects_unknown_method():
    with pytest.raises(ValueError, match="method: unknown method"):
        io.immiscible_noise(torch.randn(4, 3), method="magic")
