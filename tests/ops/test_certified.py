"""The certified exact path: candidate lists, the sparse solver, the dual certificate and the
dense fallback, in C++ (the CPU default for large costs) and in torch ops (solver="certified").
Every answer is held to scipy's optimum on fresh random inputs."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_valid_assignment, scipy_optimum

import immiscible_ops as io
from immiscible_ops import certified

STAT_NAMES = ("edges", "rounds", "violations", "dense_rows", "fell_back", "declined")


def latents(n, m, d, gen, dtype=torch.float32, scale=1.0):
    """L2 cost between scale*N(0,1) images and N(0,1) noise: the immiscible workload."""
    x = scale * torch.randn(n, d, generator=gen)
    noise = torch.randn(m, d, generator=gen)
    return torch.cdist(x.double(), noise.double()).to(dtype)


def total(cost, row_to_col):
    return float(cost.double()[torch.arange(cost.shape[0]), row_to_col].sum())


def certified_cpu(cost, k_row=0, k_col=0, max_rounds=4, force=False):
    row_to_col, stats = torch.ops.immiscible._certified_solve(cost, k_row, k_col, max_rounds, force)
    return row_to_col, dict(zip(STAT_NAMES, stats.tolist(), strict=True))


def assert_optimal(cost, row_to_col):
    assert_valid_assignment(row_to_col, cost.shape[0], cost.shape[1])
    assert total(cost, row_to_col) == pytest.approx(scipy_optimum(cost), rel=1e-12, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# The C++ path, as linear_assignment's default takes it


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,scale", [(1280, 1280, 64, 1.0), (1291, 1291, 512, 0.5),
                                         (1536, 1800, 256, 1.0), (1540, 3080, 128, 1.0)])
def test_linear_assignment_takes_the_certified_path(gen, dtype, n, m, d, scale):
    cost = latents(n, m, d, gen, dtype, scale)
    row_to_col, stats = certified_cpu(cost)
    assert not stats["declined"] and not stats["fell_back"]
    assert stats["rounds"] >= 1 and stats["edges"] < n * m // 8
    assert_optimal(cost, row_to_col)
    assert_optimal(cost, io.linear_assignment(cost))


def test_strided_and_batched_costs(gen):
    cost = latents(1280, 1280, 64, gen, torch.float64)
    assert_optimal(cost, io.linear_assignment(cost.T.contiguous().T))  # columns not contiguous
    wide = latents(1300, 2600, 64, gen)
    assert_optimal(wide[:, ::2], io.linear_assignment(wide[:, ::2]))
    batch = torch.stack([latents(1280, 1280, 32, gen) for _ in range(2)])
    out = io.linear_assignment(batch)  # problems spread over threads, serial passes inside
    for p in range(2):
        assert_optimal(batch[p], out[p])


def test_wrong_candidate_lists_are_repaired(gen):
    """One candidate per row and column: the lists miss most optima, the certificate finds it."""
    cost = latents(1024, 1024, 64, gen)
    row_to_col, stats = certified_cpu(cost, k_row=1, k_col=1, max_rounds=50, force=True)
    assert stats["violations"] > 0 or stats["dense_rows"] > 0
    assert_optimal(cost, row_to_col)


def test_forced_certificate_failure_falls_back_to_the_dense_solver(gen):
    cost = latents(1024, 1024, 64, gen)
    row_to_col, stats = certified_cpu(cost, k_row=6, k_col=3, max_rounds=1, force=True)
    assert stats["fell_back"] and stats["violations"] > 0
    assert_optimal(cost, row_to_col)


def test_rectangular_repair_restarts_cold(gen):
    cost = latents(1024, 3000, 64, gen)
    row_to_col, stats = certified_cpu(cost, k_row=3, k_col=1, max_rounds=20, force=True)
    assert not stats["fell_back"] and stats["rounds"] >= 2
    assert_optimal(cost, row_to_col)


@pytest.mark.parametrize("kind", ["integer", "constant", "column_constant", "inf", "low_d_sq"])
def test_probe_declines_what_the_dense_solver_does_better(gen, kind):
    n = 1024
    if kind == "integer":
        cost = torch.randint(0, 100, (n, n), generator=gen).double()
    elif kind == "constant":
        cost = torch.full((n, n), 3.5)
    elif kind == "column_constant":
        cost = torch.rand(1, n, generator=gen).expand(n, n).contiguous()
    elif kind == "inf":
        cost = latents(n, n, 64, gen)
        cost[5, 7] = float("inf")
    else:  # squared distances of 2-D clouds: every row lists the same extreme points
        x, y = torch.randn(n, 2, generator=gen), torch.randn(n, 2, generator=gen) + 1.0
        cost = torch.cdist(x, y) ** 2
    row_to_col, stats = certified_cpu(cost)
    assert stats["declined"]
    assert_optimal(cost, row_to_col)


def test_tie_rule_holds_at_certified_sizes(gen):
    """The documented identity on constant and column-constant costs, at a size the certified
    path would otherwise take."""
    ident = torch.arange(1300)
    assert torch.equal(io.linear_assignment(torch.full((1300, 1300), 2.0)), ident)
    col_const = torch.rand(1, 1300, generator=gen, dtype=torch.float64).expand(1300, 1300)
    assert torch.equal(io.linear_assignment(col_const.contiguous()), ident)


def test_portable_and_avx2_kernels_agree(gen, tmp_path):
    cost = latents(1280, 1280, 64, gen)
    torch.save(cost, tmp_path / "cost.pt")
    script = ("import sys, torch, immiscible_ops as io; c = torch.load(sys.argv[1]); "
              "torch.save(io.linear_assignment(c), sys.argv[2])")
    for name, env in (("avx2", {}), ("plain", {"IMMISCIBLE_DISABLE_AVX2": "1"})):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "cost.pt"),
                        str(tmp_path / f"{name}.pt")], check=True, env={**os.environ, **env})
    assert torch.equal(torch.load(tmp_path / "avx2.pt"), torch.load(tmp_path / "plain.pt"))


# ---------------------------------------------------------------------------------------------
# The certificate alone


def optimal_duals(cost):
    """The optimum and its column duals from the sparse solver on every entry."""
    n, m = cost.shape
    row_start = torch.arange(n + 1) * m
    x, v = torch.ops.immiscible._sparse_assignment(
        row_start, torch.arange(m).repeat(n), cost.double().reshape(-1).contiguous(), m, None, None)
    return x, v


@pytest.mark.parametrize("n,m", [(60, 60), (40, 90)])
def test_certificate_accepts_the_optimum_and_rejects_wrong_duals_and_assignments(gen, n, m):
    cost = latents(n, m, 16, gen, torch.float64)
    x, v = optimal_duals(cost)
    assert_optimal(cost, x)
    violations, bad_cols = torch.ops.immiscible._certify(cost, x, v, -1.0)
    assert int(violations.sum()) == 0 and int(bad_cols) == 0

    wrong_v = v.clone()
    # Column x_0 now looks cheaper to every other row than that row's own column.
    wrong_v[x[0]] += 2 * float(cost.max() - cost.min())
    violations, _ = torch.ops.immiscible._certify(cost, x, wrong_v, -1.0)
    assert int((violations > 0).sum()) == n - 1

    swapped = x.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    if total(cost, swapped) > total(cost, x) + 1e-9:
        violations, _ = torch.ops.immiscible._certify(cost, swapped, v, -1.0)
        assert int(violations[[0, 1]].sum()) > 0


def test_certificate_checks_rectangular_column_duals(gen):
    cost = latents(30, 80, 16, gen, torch.float64)
    x, v = optimal_duals(cost)
    assert int(torch.ops.immiscible._certify(cost, x, v, -1.0)[1]) == 0
    unused = [j for j in range(80) if j not in set(x.tolist())][0]
    lowered = v.clone()
    lowered[unused] = -1.0  # an unassigned column must keep the largest dual, 0
    assert int(torch.ops.immiscible._certify(cost, x, lowered, -1.0)[1]) == 1


def test_cpu_pieces_pass_opcheck(gen):
    cost = latents(20, 30, 8, gen, torch.float64)
    x, v = optimal_duals(cost)
    torch.library.opcheck(torch.ops.immiscible._certify.default, (cost, x, v, -1.0))
    row_start = torch.arange(21) * 30
    torch.library.opcheck(torch.ops.immiscible._sparse_assignment.default,
                          (row_start, torch.arange(30).repeat(20), cost.reshape(-1).contiguous(),
                           30, None, None))
    torch.library.opcheck(torch.ops.immiscible._certified_solve.default, (cost, 4, 2, 4, True))


def test_sparse_solver_reports_rows_it_cannot_match():
    # Rows 0 and 1 both only reach column 0.
    row_start = torch.tensor([0, 1, 2, 4])
    cols = torch.tensor([0, 0, 1, 2])
    costs = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    x, _ = torch.ops.immiscible._sparse_assignment(row_start, cols, costs, 3, None, None)
    assert int((x < 0).sum()) >= 1


# ---------------------------------------------------------------------------------------------
# solver="certified": torch ops on the cost's device (CPU tensors here, CUDA below)


@pytest.mark.parametrize("n,m", [(257, 257), (300, 700), (1024, 1024)])
def test_certified_solver_on_cpu_tensors(gen, n, m):
    cost = latents(n, m, 48, gen)
    stats = {}
    row_to_col = certified.solve(cost, stats=stats)
    assert not stats["fell_back"]
    assert_optimal(cost, row_to_col)
    assert_optimal(cost, io.linear_assignment(cost, solver="certified"))


def test_certified_solver_batched_and_fallbacks(gen):
    batch = torch.stack([latents(120, 150, 8, gen) for _ in range(3)])
    out = io.linear_assignment(batch, solver="certified")
    for p in range(3):
        assert_optimal(batch[p], out[p])
    cost = latents(200, 200, 32, gen)
    stats = {}
    assert_optimal(cost, certified.solve(cost, row_candidates=2, col_candidates=1, max_rounds=1,
                                         stats=stats))
    assert stats["fell_back"]
    forbidden = latents(50, 50, 8, gen)
    forbidden[3, :] = float("inf")
    with pytest.raises(ValueError, match="no feasible assignment"):
        io.linear_assignment(forbidden, solver="certified")
    with_nan = latents(50, 50, 8, gen)
    with_nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        io.linear_assignment(with_nan, solver="certified")


def test_assign_and_noise_accept_the_certified_solver(gen):
    x = torch.randn(64, 4, 8, 8, generator=gen)
    noise = torch.randn(64, 4, 8, 8, generator=gen)
    idx = io.assign(x, noise, solver="certified", precision="fp32")
    cost = io.pairwise_distance(x.reshape(64, -1), noise.reshape(64, -1))
    assert_optimal(cost, idx)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_certified_solver_on_cuda(gen):
    cost = latents(2048, 2048, 256, gen).cuda()
    row_to_col = io.linear_assignment(cost, solver="certified")
    assert row_to_col.is_cuda
    assert_optimal(cost.cpu(), row_to_col.cpu())
