"""linear_assignment on CPU against scipy's optimum: every cost family, both solvers."""

import math

import pytest
import torch
from conftest import assert_valid_assignment, make_cost, scipy_optimum
from hypothesis import given, settings
from hypothesis import strategies as st

import immiscible_ops as io
from immiscible_ops.reference import assignment_cost

KINDS = ["uniform", "integer_ties", "all_equal", "offset", "negative", "l2_highdim", "large_range"]
SHAPES = [(1, 1), (2, 2), (7, 7), (33, 33), (64, 64), (97, 97), (5, 9), (40, 61), (64, 256)]


def auction_tol(cost: torch.Tensor) -> float:
    # Auction's default bound: 1e-6 of the total (and exact on integers).
    return 1e-6 * abs(scipy_optimum(cost)) + 1e-9


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_exact_matches_scipy(kind, shape, gen):
    cost = make_cost(kind, *shape, gen)
    out = io.linear_assignment(cost, solver="exact")
    assert_valid_assignment(out, *shape)
    assert assignment_cost(cost, out).item() == pytest.approx(scipy_optimum(cost), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(7, 7), (40, 40), (64, 64), (13, 29), (50, 120)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_auction_within_default_tol(kind, shape, gen):
    cost = make_cost(kind, *shape, gen)
    out = io.linear_assignment(cost, solver="auction")
    assert_valid_assignment(out, *shape)
    excess = assignment_cost(cost, out).item() - scipy_optimum(cost)
    assert -1e-9 <= excess <= auction_tol(cost)


def test_auction_exact_on_integers(gen):
    cost = torch.randint(0, 1000, (120, 120), generator=gen).double()
    out = io.linear_assignment(cost, solver="auction")
    assert assignment_cost(cost, out).item() == scipy_optimum(cost)


@pytest.mark.parametrize("tol", [1.0, 1e-2, 1e-4])
def test_auction_respects_explicit_tol(tol, gen):
    cost = 100 * torch.rand(80, 80, generator=gen, dtype=torch.float64)
    out = io.linear_assignment(cost, solver="auction", tol=tol)
    excess = assignment_cost(cost, out).item() - scipy_optimum(cost)
    assert excess <= tol + 1e-9


@pytest.mark.parametrize("solver", ["exact", "auction"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(solver, dtype, gen):
    cost = (10 * torch.rand(30, 45, generator=gen)).to(dtype)
    out = io.linear_assignment(cost, solver=solver)
    assert out.device == cost.device
    excess = assignment_cost(cost, out).item() - scipy_optimum(cost)
    assert excess <= auction_tol(cost.double())


@pytest.mark.parametrize("solver", ["exact", "auction"])
def test_batched_and_leading_dims(solver, gen):
    cost = torch.rand(3, 4, 17, 23, generator=gen, dtype=torch.float64)
    out = io.linear_assignment(cost, solver=solver)
    assert out.shape == (3, 4, 17)
    for a in range(3):
        for b in range(4):
            assert_valid_assignment(out[a, b], 17, 23)
            got = assignment_cost(cost[a, b], out[a, b]).item()
            assert got == pytest.approx(scipy_optimum(cost[a, b]), rel=1e-6)


def test_many_small_problems_in_parallel(gen):
    cost = torch.rand(64, 32, 32, generator=gen, dtype=torch.float64)
    out = io.linear_assignment(cost)
    totals = assignment_cost(cost, out)
    for p in range(64):
        assert totals[p].item() == pytest.approx(scipy_optimum(cost[p]), rel=1e-12)


def test_non_contiguous(gen):
    base = torch.rand(50, 40, generator=gen, dtype=torch.float64)
    cost = base.t()  # [40, 50], column-major view
    assert not cost.is_contiguous()
    out = io.linear_assignment(cost)
    assert assignment_cost(cost, out).item() == pytest.approx(scipy_optimum(cost), rel=1e-12)
    strided = torch.rand(30, 80, generator=gen, dtype=torch.float64)[:, ::2]
    out = io.linear_assignment(strided)
    assert assignment_cost(strided, out).item() == pytest.approx(scipy_optimum(strided), rel=1e-12)


@pytest.mark.parametrize("solver", ["exact", "auction"])
@pytest.mark.parametrize("shape", [(30, 30), (25, 40)])
def test_forbidden_entries(solver, shape, gen):
    n, m = shape
    cost = torch.rand(n, m, generator=gen, dtype=torch.float64)
    forbidden = torch.rand(n, m, generator=gen) < 0.6
    keep = torch.randperm(m, generator=gen)[:n]  # one feasible assignment stays allowed
    forbidden[torch.arange(n), keep] = False
    cost[forbidden] = math.inf
    out = io.linear_assignment(cost, solver=solver)
    assert_valid_assignment(out, n, m)
    total = assignment_cost(cost, out).item()
    assert math.isfinite(total)
    assert total == pytest.approx(scipy_optimum(cost), rel=1e-6)


@pytest.mark.parametrize("solver", ["exact", "auction"])
def test_infeasible_raises_or_marks(solver):
    cost = torch.rand(4, 4, dtype=torch.float64)
    cost[:, 0] = math.inf
    cost[:, 1] = math.inf  # four rows, two usable columns
    with pytest.raises(ValueError, match="no feasible assignment"):
        io.linear_assignment(cost, solver=solver)
    out = io.linear_assignment(cost, solver=solver, validate=False)
    assert bool((out == -1).all())


def test_infeasible_names_the_problem():
    cost = torch.rand(3, 5, 5, dtype=torch.float64)
    cost[1, 2, :] = math.inf
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        io.linear_assignment(cost)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (2, 0, 0), (0, 3, 3)])
def test_empty(shape):
    cost = torch.rand(shape)
    out = io.linear_assignment(cost)
    assert out.shape == shape[:-1]
    assert out.dtype == torch.long


@pytest.mark.parametrize("solver", ["exact", "auction"])
def test_deterministic(solver, gen):
    cost = torch.randint(0, 3, (60, 60), generator=gen).float()  # many ties
    first = io.linear_assignment(cost, solver=solver)
    for _ in range(3):
        assert torch.equal(io.linear_assignment(cost, solver=solver), first)


def test_torch_ops_entry_point(gen):
    cost = torch.rand(9, 12, generator=gen)
    out = torch.ops.immiscible.linear_assignment(cost)
    assert torch.equal(out, io.linear_assignment(cost))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    extra=st.integers(0, 6),
    values=st.sampled_from(["int", "float"]),
    solver=st.sampled_from(["exact", "auction"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_optimal_permutation(n, extra, values, solver, seed):
    g = torch.Generator().manual_seed(seed)
    m = n + extra
    cost = (torch.randint(-5, 6, (n, m), generator=g).double() if values == "int"
            else torch.randn(n, m, generator=g, dtype=torch.float64))
    out = io.linear_assignment(cost, solver=solver)
    assert_valid_assignment(out, n, m)
    excess = assignment_cost(cost, out).item() - scipy_optimum(cost)
    assert abs(excess) <= (1e-9 if solver == "exact" or values == "int" else auction_tol(cost))


@pytest.mark.parametrize("solver", ["exact", "auction"])
def test_portable_loops_match_avx2(solver, tmp_path, gen):
    """The scalar fallback (CPUs without AVX2) gives the same columns as the AVX2 kernels (the
    auction's bids and duality gap scan rows with the exact solver's kernels)."""
    import os
    import subprocess
    import sys

    costs = [make_cost(kind, 45, 45 + extra, gen) for kind in KINDS for extra in (0, 7)]
    costs += [tie_heavy_cost(family, 150, forbid, gen) for family in TIE_FAMILIES for forbid in (0.0, 0.2)]
    torch.save(costs, tmp_path / "costs.pt")
    script = (
        "import sys, torch, immiscible_ops as io\n"
        "costs = torch.load(sys.argv[1])\n"
        "torch.save([io.linear_assignment(c, solver=sys.argv[3]) for c in costs], sys.argv[2])\n"
    )
    env = {**os.environ, "IMMISCIBLE_DISABLE_AVX2": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "costs.pt"), str(tmp_path / "out.pt"),
                    solver], env=env, check=True, timeout=120)
    portable = torch.load(tmp_path / "out.pt")
    for cost, cols in zip(costs, portable, strict=True):
        assert torch.equal(cols, io.linear_assignment(cost, solver=solver))


def test_exact_on_many_small_tied_problems(gen):
    """Hundreds of small square and rectangular integer costs, where ties steer every phase
    (column reduction, row reduction, the tie shortcut of the shortest-path search)."""
    for _ in range(300):
        n = int(torch.randint(1, 13, (1,), generator=gen))
        m = n + int(torch.randint(0, 7, (1,), generator=gen))
        cost = torch.randint(-5, 6, (n, m), generator=gen).double()
        out = io.linear_assignment(cost)
        assert_valid_assignment(out, n, m)
        assert assignment_cost(cost, out).item() == scipy_optimum(cost)


@pytest.mark.parametrize("family", ["int0-4", "all-equal"])
def test_tie_heavy_large(family, gen):
    from immiscible_ops.bench import TIE_FAMILIES

    cost = TIE_FAMILIES[family](300, gen)
    out = io.linear_assignment(cost)
    assert assignment_cost(cost, out).item() == scipy_optimum(cost)


# Square tie-heavy families for the exact solver's tie rules: a free column at the row minimum in
# row reduction, the slack-0 shortcut, and the tight-pair search from all free rows. "outer"
# (products of small integers) has a large tight graph without a tight perfect matching, so the
# Dijkstra phase also runs after the tight search.
TIE_FAMILIES = ["int0-3", "int0-99", "all-equal", "tenths", "outer"]


def tie_heavy_cost(family: str, n: int, forbid: float, gen: torch.Generator) -> torch.Tensor:
    """Fresh float64 [n, n] cost of a tie-heavy family, a fraction `forbid` of entries +inf."""
    if family == "int0-3":
        cost = torch.randint(0, 4, (n, n), generator=gen).double()
    elif family == "int0-99":
        cost = torch.randint(0, 100, (n, n), generator=gen).double()
    elif family == "all-equal":
        cost = torch.full((n, n), -1.5, dtype=torch.float64)
    elif family == "tenths":
        cost = torch.randint(-20, 20, (n, n), generator=gen).double() / 10
    elif family == "outer":
        cost = torch.outer(torch.randint(0, 4, (n,), generator=gen), torch.randint(1, 4, (n,), generator=gen)).double()
    else:
        raise KeyError(family)
    if forbid:
        cost[torch.rand(n, n, generator=gen) < forbid] = math.inf
    return cost


@pytest.mark.parametrize("family", TIE_FAMILIES)
@pytest.mark.parametrize("forbid", [0.0, 0.2])
def test_exact_on_tie_heavy_families(family, forbid, gen):
    for n in (33, 128, 301):
        cost = tie_heavy_cost(family, n, forbid, gen)
        try:
            optimum = scipy_optimum(cost)
        except ValueError:  # infeasible: ours must say so too
            with pytest.raises(ValueError, match="no feasible assignment"):
                io.linear_assignment(cost)
            continue
        out = io.linear_assignment(cost)
        assert_valid_assignment(out, n, n)
        assert assignment_cost(cost, out).item() == pytest.approx(optimum, rel=1e-12, abs=1e-9)
