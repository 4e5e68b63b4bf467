"""The `immiscible` operators: Python entry points (validation, batching, composition), their
fake kernels for torch.compile, and the public functions.

Device kernels live elsewhere and are found by the dispatcher:
  solve_batched       csrc/cpu/linear_assignment_cpu.cpp (CPU), csrc/cuda/ (CUDA)
  pairwise_distance   reference.pairwise_distance (any device), triton_distance.py (CUDA)
  knn_noise           reference.knn_noise_reference (any device), triton_knn.py (CUDA)
"""

from typing import Optional

import torch

from immiscible_ops import _checks, _loading, certified, reference

_NO_TOL = -1.0  # what the kernels read as "use your default"


# ---------------------------------------------------------------------------------------------
# linear_assignment


@torch.library.impl("immiscible::linear_assignment", "CompositeExplicitAutograd")
def _linear_assignment(cost, solver="auto", tol=None, validate=True):
    _checks.check_cost(cost, solver, tol)
    batch, (n, m) = cost.shape[:-2], cost.shape[-2:]
    if n == 0 or batch.numel() == 0:
        return torch.empty(cost.shape[:-1], dtype=torch.long, device=cost.device)
    if solver == "certified":
        return certified.solve_batched(cost.reshape(-1, n, m), validate).reshape(*batch, n)
    if cost.device.type == "cuda":
        _loading.check_cuda_device(cost.device)
    row_to_col, status = torch.ops.immiscible.solve_batched(
        cost.reshape(-1, n, m), solver, _NO_TOL if tol is None else float(tol)
    )
    if validate:
        _checks.check_status(status, batch)
    return row_to_col.reshape(*batch, n)


@torch.library.register_fake("immiscible::linear_assignment")
def _linear_assignment_fake(cost, solver="auto", tol=None, validate=True):
    _checks.check_cost(cost, solver, tol)
    return cost.new_empty(cost.shape[:-1], dtype=torch.long)


@torch.library.register_fake("immiscible::solve_batched")
def _solve_batched_fake(cost, solver, tol):
    p, n, _ = cost.shape
    return cost.new_empty((p, n), dtype=torch.long), cost.new_empty((p,), dtype=torch.int32)


# The certified path's CPU pieces (csrc/cpu/lap_sparse.h): the sparse solver behind
# solver="certified", and test hooks.


@torch.library.register_fake("immiscible::_sparse_assignment")
def _sparse_assignment_fake(row_start, cols, costs, m, x0, v0):
    n = row_start.shape[0] - 1
    return (row_start.new_empty((n,), dtype=torch.long),
            row_start.new_empty((m,), dtype=torch.float64))


@torch.library.register_fake("immiscible::_certify")
def _certify_fake(cost, row_to_col, v, tol):
    return (cost.new_empty((cost.shape[0],), dtype=torch.long),
            cost.new_empty((1,), dtype=torch.long))


@torch.library.register_fake("immiscible::_certified_solve")
def _certified_solve_fake(cost, row_candidates, col_candidates, max_rounds, force):
    return (cost.new_empty((cost.shape[0],), dtype=torch.long),
            cost.new_empty((6,), dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# pairwise_distance


@torch.library.impl("immiscible::pairwise_distance", "CompositeExplicitAutograd")
def _pairwise_distance(x, y, metric="l2", precision="fp32"):
    _checks.check_pair(x, y, metric, precision)
    return reference.pairwise_distance(x, y, metric, precision)


@torch.library.register_fake("immiscible::pairwise_distance")
def _pairwise_distance_fake(x, y, metric="l2", precision="fp32"):
    _checks.check_pair(x, y, metric, precision)
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    return x.new_empty((*batch, x.shape[-2], y.shape[-2]), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# assign


def group_mask(groups: torch.Tensor, pool: int) -> torch.Tensor:
    """Bool [B, K]: True where image i may take noise j under class groups [B].

    Noise j belongs to the group of the image at sorted position floor(j * B / K), so every
    group owns a contiguous share of at least as many noises as it has images, computed on the
    device without a host sync.
    """
    b = groups.shape[0]
    sorted_groups = torch.sort(groups, stable=True).values
    owner = torch.arange(pool, device=groups.device) * b // pool
    return groups.unsqueeze(1) == sorted_groups[owner].unsqueeze(0)


@torch.library.impl("immiscible::assign", "CompositeExplicitAutograd")
def _assign(x, noise, metric="l2", precision="fp16", solver="auto", tol=None, groups=None,
            validate=True):
    _checks.check_assign(x, noise, metric, precision, solver, tol, groups)
    b, k = x.shape[0], noise.shape[0]
    if b == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    cost = torch.ops.immiscible.pairwise_distance(
        x.reshape(b, -1), noise.reshape(k, -1), metric, precision
    )
    if groups is not None:
        cost = cost.masked_fill_(~group_mask(groups, k), float("inf"))
    return torch.ops.immiscible.linear_assignment(cost, solver, tol, validate)


@torch.library.register_fake("immiscible::assign")
def _assign_fake(x, noise, metric="l2", precision="fp16", solver="auto", tol=None, groups=None,
                 validate=True):
    _checks.check_assign(x, noise, metric, precision, solver, tol, groups)
    return x.new_empty((x.shape[0],), dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# knn_noise


@torch.library.impl("immiscible::knn_noise", "CompositeExplicitAutograd")
def _knn_noise(x, k, seed):
    _checks.check_knn(x, k)
    _checks.check_seed_tensor(seed)
    return reference.knn_noise_reference(x, k, seed)


@torch.library.register_fake("immiscible::knn_noise")
def _knn_noise_fake(x, k, seed):
    _checks.check_knn(x, k)
    _checks.check_seed_tensor(seed)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(
        (x.shape[0],), dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# Public functions


def linear_assignment(cost: torch.Tensor, *, solver: str = "auto", tol: Optional[float] = None,
                      validate: bool = True) -> torch.Tensor:
    """cost [..., N, M] (N <= M) -> LongTensor [..., N]: row i takes column out[..., i], columns
    distinct, total cost minimal (+inf forbids a pair).

    solver: "exact" (CPU default: Jonker-Volgenant, through candidate lists and a dual
    certificate on large costs), "auction" (within `tol` of the optimum; CUDA default),
    "certified" (exact on any device: candidates and certificate with torch ops, sparse solve on
    the host; syncs), or "auto". tol: absolute bound on the excess over the optimum (default: 1e-6
    of the total, exact for integer costs). validate=False skips reading the solver's status
    (NaN, -inf, infeasible), the one step that synchronizes with a GPU; a rejected problem then
    returns rows of -1.
    """
    return torch.ops.immiscible.linear_assignment(cost, solver, tol, validate)


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, *, metric: str = "l2",
                      precision: str = "fp32") -> torch.Tensor:
    """x [..., N, D], y [..., M, D] -> float32 [..., N, M] distances ("l2", "sqeuclidean", "l1"),
    inputs first quantized to precision "fp32" | "fp16" | "bf16" | "fp8" (e4m3, per-row scale)."""
    return torch.ops.immiscible.pairwise_distance(x, y, metric, precision)


def assign(x: torch.Tensor, noise: torch.Tensor, *, metric: str = "l2", precision: str = "fp16",
           solver: str = "auto", tol: Optional[float] = None,
           groups: Optional[torch.Tensor] = None, validate: bool = True) -> torch.Tensor:
    """x [B, ...], noise [K, ...] (K >= B) -> LongTensor [B] of distinct indices into noise that
    minimizes sum_i dist(x[i], noise[idx[i]]); with groups [B], images only take noise from
    their group's share of the pool."""
    return torch.ops.immiscible.assign(x, noise, metric, precision, solver, tol, groups, validate)
