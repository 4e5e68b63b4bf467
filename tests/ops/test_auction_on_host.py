"""The CUDA auction's own source (csrc/cuda/auction.cuh), run on CPU threads through the host shim,
against scipy's optimum. Both worker groups: one block per problem (batches), and a grid of
several multi-warp blocks per problem (cross-block reductions, grid barriers, the "fewer bidders
than blocks" path). Sizes are small: every emulated GPU thread is an OS thread."""

import math
import subprocess
import sys

import pytest
import torch
from scipy.optimize import linear_sum_assignment

testing = pytest.importorskip("immiscible_ops.testing")
try:
    testing._load()
except RuntimeError as error:  # pragma: no cover - a checkout built without the module
    pytest.skip(str(error), allow_module_level=True)

auction_on_host = testing.auction_on_host
GROUPS = ["block", "grid"]


def optimum(cost: torch.Tensor) -> float:
    c = cost.double().numpy()
    rows, cols = linear_sum_assignment(c)
    return float(c[rows, cols].sum())


def total(cost: torch.Tensor, row_to_col: torch.Tensor) -> float:
    return float(cost.double().gather(1, row_to_col.unsqueeze(1)).sum())


def allowed_excess(cost: torch.Tensor, best: float, tol=None, exact=False) -> float:
    """The documented contract (docs/GPU.md): within tol (default 1e-6 of the total), or, where
    eps reaches its floor first, n eps_floor (2^-21 of the cost range per row); plus the float32
    rounding of the shifted costs."""
    finite = cost[torch.isfinite(cost)].double()
    n = cost.shape[0]
    span = float(finite.max() - finite.min()) if finite.numel() else 0.0
    ulp = math.ulp(float(finite.abs().max())) if finite.numel() else 0.0
    target = 0.0 if exact else (tol if tol else 1e-6 * abs(best))
    return max(target, n * span * 2.0**-20) + 4 * n * ulp + 1e-12


def check(cost: torch.Tensor, row_to_col, status, tol=None, exact=False, integral=False):
    """cost [B, N, M]: every problem solved, columns distinct, total within the contract."""
    assert row_to_col.dtype == torch.int64 and status.dtype == torch.int32
    b, n, m = cost.shape
    assert row_to_col.shape == (b, n) and status.shape == (b,)
    for p in range(b):
        assert int(status[p]) == 0, f"problem {p}: status {int(status[p])}"
        r = row_to_col[p]
        assert bool(((r >= 0) & (r < m)).all()) and r.unique().numel() == n
        best, got = optimum(cost[p]), total(cost[p], r)
        if integral:
            assert got == best, (p, got, best)
        else:
            assert best - 1e-9 * max(1.0, abs(best)) <= got <= best + allowed_excess(
                cost[p], best, tol, exact), (p, got, best)


@pytest.mark.parametrize("group", GROUPS)
def test_uniform(group, gen):
    problems = 5 if group == "block" else 2  # block: 3 waves of 2 resident blocks
    cost = torch.rand(problems, 24, 24, generator=gen)
    check(cost, *auction_on_host(cost, group=group))


@pytest.mark.parametrize("group", GROUPS)
def test_integer_exact(group, gen):
    cost = torch.randint(0, 50, (2, 20, 20), generator=gen).float()
    check(cost, *auction_on_host(cost, group=group), integral=True)


@pytest.mark.parametrize("group", GROUPS)
def test_tie_heavy(group, gen):
    few = torch.randint(0, 4, (2, 16, 16), generator=gen).float()
    check(few, *auction_on_host(few, group=group), integral=True)
    equal = torch.full((1, 12, 12), 2.5)
    check(equal, *auction_on_host(equal, group=group))


@pytest.mark.parametrize("group", GROUPS)
def test_large_offset(group, gen):
    cost = 1e4 + torch.rand(2, 20, 20, generator=gen)
    check(cost, *auction_on_host(cost, group=group))


@pytest.mark.parametrize("group", GROUPS)
def test_fp16_quantized_immiscible(group, gen):
    """The production workload: distances of images to noise, quantized through fp16."""
    images = 0.5 * torch.randn(2, 24, 64, generator=gen)
    noise = torch.randn(2, 24, 64, generator=gen)
    cost = torch.cdist(images, noise).half().float()
    check(cost, *auction_on_host(cost, group=group))


def rectangular_batch(n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """[4, n, m]: uniform, integers 0..99, integers 0..3 (ties), uniform with a feasible +inf
    pattern (70% forbidden)."""
    uniform = torch.rand(n, m, generator=gen)
    integer = torch.randint(0, 100, (n, m), generator=gen).float()
    ties = torch.randint(0, 4, (n, m), generator=gen).float()
    inf = torch.rand(n, m, generator=gen)
    forbid = torch.rand(n, m, generator=gen) < 0.7
    forbid[torch.arange(n), torch.randperm(m, generator=gen)[:n]] = False
    inf[forbid] = float("inf")
    return torch.stack([uniform, integer, ties, inf])


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("n,m", [(7, 8), (7, 14), (6, 24), (4, 256)])  # M = N+1, 2N, 4N, 64N
def test_rectangular(group, n, m, gen):
    cost = rectangular_batch(n, m, gen)
    row_to_col, status = auction_on_host(cost, group=group)
    check(cost[[0, 3]], row_to_col[[0, 3]], status[[0, 3]])
    check(cost[1:3], row_to_col[1:3], status[1:3], integral=True)


@pytest.mark.parametrize("group", GROUPS)
def test_rectangular_all_equal_and_single_row(group, gen):
    equal = torch.full((1, 6, 20), 0.75)
    check(equal, *auction_on_host(equal, group=group))
    one_row = torch.rand(2, 1, 40, generator=gen)
    check(one_row, *auction_on_host(one_row, group=group))


@pytest.mark.parametrize("group", GROUPS)
def test_rectangular_sparse_large_prices(group, gen):
    """Each row allows two of forty columns: bids jump to the +inf penalty, prices grow far past
    the cost range and price steps near the eps floor round away (the ulp guards)."""
    n, m = 6, 40
    cost = torch.full((2, n, m), float("inf"))
    for p in range(2):
        cols = torch.randperm(m, generator=gen)[: 2 * n].view(n, 2)
        cols[:, 1] = cols[torch.randperm(n, generator=gen), 1]  # rows overlap in their second pick
        cost[p].scatter_(1, cols, torch.rand(n, 2, generator=gen))
    check(cost, *auction_on_host(cost, group=group))
    check(cost, *auction_on_host(cost, group=group, exact=True), exact=True)


def test_rectangular_rounds_do_not_explode(gen):
    """Squaring the problem with zero-cost dummy rows takes 19345 bidding rounds on a uniform
    16x64 problem (docs/PERF.md); the forward/reverse auction needs a few dozen to a few hundred,
    and this bound fails long before a regression to the squared behaviour."""
    cost = torch.rand(1, 16, 64, generator=gen)
    row_to_col, status, rounds = auction_on_host(cost, group="grid", return_rounds=True)
    check(cost, row_to_col, status)
    assert int(rounds.sum()) < 2000, rounds.tolist()


@pytest.mark.parametrize("group", GROUPS)
def test_tie_heavy_rounds_do_not_explode(group, gen):
    """On costs with few distinct values a jump to a tiny eps starts a bidding war in eps-sized
    steps (all-equal 64x64: 55681 rounds, integers 0..3: 537-1214, docs/PERF.md). The schedule
    divides eps by 7 when most bids tied, stops at eps 0.5/N on integer costs, and starts there
    when row minima repeat (few distinct values)."""
    equal = torch.ones(2, 64, 64)
    row_to_col, status, rounds = auction_on_host(equal, group=group, return_rounds=True)
    check(equal, row_to_col, status, integral=True)
    assert int(rounds.max()) <= 2 * 64, rounds.tolist()
    ints = torch.randint(0, 4, (3, 64, 64), generator=gen).float()
    row_to_col, status, rounds = auction_on_host(ints, group=group, return_rounds=True)
    check(ints, row_to_col, status, integral=True)
    assert int(rounds.max()) < 200, rounds.tolist()


@pytest.mark.parametrize("group", GROUPS)
def test_tol_and_exact(group, gen):
    cost = torch.rand(1, 20, 20, generator=gen)
    check(cost, *auction_on_host(cost, group=group, tol=0.05), tol=0.05)
    check(cost, *auction_on_host(cost, group=group, exact=True), exact=True)


@pytest.mark.parametrize("group", GROUPS)
def test_inf_feasible(group, gen):
    n = 16
    cost = torch.rand(2, n, n, generator=gen)
    forbid = torch.rand(2, n, n, generator=gen) < 0.6
    keep = torch.stack([torch.randperm(n, generator=gen) for _ in range(2)])
    forbid[torch.arange(2).unsqueeze(1), torch.arange(n), keep] = False  # a finite permutation
    cost[forbid] = float("inf")
    row_to_col, status = auction_on_host(cost, group=group)
    check(cost, row_to_col, status)
    assert bool(torch.isfinite(cost.gather(2, row_to_col.unsqueeze(2))).all())


@pytest.mark.parametrize("group", GROUPS)
def test_inf_infeasible(group, gen):
    cost = torch.rand(3, 10, 12, generator=gen)
    cost[0, 4] = float("inf")  # a row with no allowed column
    cost[1, :3] = float("inf")  # three rows share two allowed columns
    cost[1, :3, 5:7] = 1.0
    cost[2] = float("inf")  # everything forbidden
    row_to_col, status = auction_on_host(cost, group=group)
    assert status.tolist() == [1, 1, 1]
    assert bool((row_to_col == -1).all())
    wide = torch.rand(1, 4, 40, generator=gen)
    wide[0, :3] = float("inf")  # three rows share two allowed columns of forty
    wide[0, :3, 7] = wide[0, :3, 30] = 2.0
    row_to_col, status = auction_on_host(wide, group=group)
    assert status.tolist() == [1] and bool((row_to_col == -1).all())


@pytest.mark.parametrize("group", GROUPS)
def test_nan_and_neg_inf_status(group, gen):
    cost = torch.rand(3, 6, 6, generator=gen)
    cost[0, 2, 3] = float("nan")
    cost[1, 5, 0] = float("-inf")
    row_to_col, status = auction_on_host(cost, group=group)
    assert status.tolist() == [2, 3, 0]
    assert bool((row_to_col[:2] == -1).all())
    check(cost[2:], row_to_col[2:], status[2:])


@pytest.mark.parametrize("group", GROUPS)
def test_tiny_and_empty(group):
    row_to_col, status = auction_on_host(torch.tensor([[[3.5]]]), group=group)
    assert row_to_col.tolist() == [[0]] and status.tolist() == [0]
    row_to_col, status = auction_on_host(torch.tensor([[[2.0, -1.0, 4.0]]]), group=group)
    assert row_to_col.tolist() == [[1]] and status.tolist() == [0]
    row_to_col, status = auction_on_host(torch.empty(0, 4, 4), group=group)
    assert row_to_col.shape == (0, 4) and status.shape == (0,)
    row_to_col, status = auction_on_host(torch.empty(3, 0, 5), group=group)
    assert row_to_col.shape == (3, 0) and status.tolist() == [0, 0, 0]


@pytest.mark.parametrize("group,threads,blocks", [
    ("block", 32, 1), ("block", 128, 3), ("grid", 96, 3), ("grid", 32, 4), ("grid", 256, 2)])
def test_thread_and_block_counts(group, threads, blocks, gen):
    cost = torch.rand(3 if group == "block" else 1, 40, 40, generator=gen)
    check(cost, *auction_on_host(cost, group=group, threads=threads, blocks=blocks))


def test_two_dim_input_and_rounds(gen):
    cost = torch.rand(12, 12, generator=gen)
    row_to_col, status, rounds = auction_on_host(cost, return_rounds=True)
    assert row_to_col.shape == (1, 12) and rounds.shape == (1, 2) and rounds.dtype == torch.int32
    assert int(rounds[0, 0]) > 0
    check(cost.unsqueeze(0), row_to_col, status)


@pytest.mark.parametrize("group", GROUPS)
def test_deterministic(group, gen):
    """Bids merge through order-independent atomics: thread interleavings must not matter."""
    cost = torch.randint(0, 3, (2, 20, 20), generator=gen).float()
    first = auction_on_host(cost, group=group, return_rounds=True)
    second = auction_on_host(cost, group=group, return_rounds=True)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,name", [
    ({"group": "warp"}, "group"), ({"threads": 48}, "threads"), ({"threads": 2048}, "threads"),
    ({"threads": 0}, "threads"), ({"blocks": 0}, "blocks"), ({"tol": -1.0}, "tol"),
    # As linear_assignment: tol=0.0 is not a silent "use the default".
    ({"tol": 0.0}, "tol"), ({"tol": float("nan")}, "tol")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        auction_on_host(torch.rand(1, 3, 3), **kwargs)


@pytest.mark.parametrize("cost,name", [
    (torch.rand(1, 3, 3, dtype=torch.float64), "cost"), (torch.rand(1, 4, 3), "cost"),
    (torch.rand(3), "cost"), ([[1.0]], "cost")])
def test_bad_cost(cost, name):
    with pytest.raises(ValueError, match=name):
        auction_on_host(cost)


def test_missing_module_says_how_to_build(monkeypatch):
    monkeypatch.setattr(testing, "_library", None)
    monkeypatch.setattr(testing.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="build_ext --inplace"):
        auction_on_host(torch.rand(1, 2, 2))


def test_reachable_as_an_attribute_after_a_plain_import():
    script = ("import immiscible_ops, torch; "
              "out, status = immiscible_ops.testing.auction_on_host(torch.rand(1, 3, 3)); "
              "print(sorted(out[0].tolist()), int(status[0]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1, 2] 0"


def test_integrations_reachable_as_an_attribute_after_a_plain_import():
    script = "import immiscible_ops; print(immiscible_ops.integrations.__name__)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "immiscible_ops.integrations"
