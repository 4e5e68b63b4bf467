"""The `immiscible` operators: Python entry points (validation, batching, composition), their
fake kernels for torch.compile, and the public functions.

Device kernels live elsewhere and are found by the dispatcher:
  solve_batched       csrc/cpu/linear_assignment_cpu.cpp (CPU), csrc/cuda/ (CUDA)
  pairwise_distance   reference.pairwise_distance (any device), triton_distance.py (CUDA)
  knn_noise           reference.knn_noise_reference (any device), triton_knn.py (CUDA)
"""

import math
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


def condition_slots(b: int, pool: int, device) -> torch.Tensor:
    """LongTensor [K]: the image whose condition noise slot j carries, floor(j * B / K) (slot j
    carries image j's when K == B), the same share group_mask gives a class."""
    return torch.arange(pool, device=device) * b // pool


def condition_distance(rows: torch.Tensor, cols: torch.Tensor,
                       metric: str = "cosine") -> torch.Tensor:
    """rows [B, ...], cols [K, ...] conditions -> float32 [B, K]: "cosine" 1 - cos (a zero
    vector is at distance 1 from everything), "sqeuclidean" the squared L2 distance; never
    negative (rounding is clamped away)."""
    a, b = rows.reshape(rows.shape[0], -1).float(), cols.reshape(cols.shape[0], -1).float()
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        b = torch.nn.functional.normalize(b, dim=1)
        return (1 - a @ b.T).clamp_min_(0)
    return reference.pairwise_distance(a, b, "sqeuclidean", "fp32").clamp_min_(0)


MAX_CONDITION_WEIGHT = 1e8  # C2OT's cap: the weight where the condition cost alone decides


def condition_weight_for_r(dist: torch.Tensor, cond: torch.Tensor, target_r: float) -> torch.Tensor:
    """dist, cond [B, K] (K >= B) -> 0-d float32 w on their device, the largest w for which
    r(w) = mean over (i, j) of [dist[i, j] + w * cond[i, j] <= dist[i, i]] is still >= target_r
    (C2OT's r: the fraction of pairs at most as costly as the image's independent pair), clamped to
    [0, 1e8]; 0 when even r(0) < target_r, as in C2OT.

    C2OT finds w by doubling then bisection, a host round trip per probe. r(w) is a step function:
    entry (i, j) counts while w <= t[i, j] = (dist[i, i] - dist[i, j]) / cond[i, j] (for
    cond == 0: always or never), so the w sought is the ceil(r * B * K)-th largest t, one
    kthvalue on the device and no host sync."""
    b, k = dist.shape
    slack = dist.diagonal()[:, None] - dist
    never = torch.full((), -math.inf, device=dist.device)
    t = torch.where(cond > 0, slack / cond, torch.where(slack >= 0, math.inf, never))
    count = min(b * k, max(1, math.ceil(target_r * b * k - 1e-9)))
    w = torch.kthvalue(t.flatten(), b * k - count + 1).values
    return w.clamp(0, MAX_CONDITION_WEIGHT).nan_to_num_(0.0)


def condition_cost(dist: torch.Tensor, conditions: torch.Tensor, weight=None, target_r=None,
                   metric: str = "cosine"):
    """dist [B, K] + w * condition_distance: returns (cost [B, K], w as a 0-d tensor)."""
    b, k = dist.shape
    owner = condition_slots(b, k, dist.device)
    cond = condition_distance(conditions, conditions[owner], metric)
    # A slot carrying the image's own condition is at distance 0, not at float32 rounding noise
    # (1 - cos(c, c) = +-6e-8): target_r counts such pairs or not on that sign alone.
    cond.masked_fill_(owner[None, :] == torch.arange(b, device=dist.device)[:, None], 0.0)
    if target_r is not None:
        w = condition_weight_for_r(dist, cond, target_r)
    else:
        w = torch.tensor(float(weight), device=dist.device)
    return dist + w * cond, w


@torch.library.impl("immiscible::assign", "CompositeExplicitAutograd")
def _assign(x, noise, metric="l2", precision="fp16", solver="auto", tol=None, groups=None,
            validate=True, conditions=None, condition_weight=None, condition_target_r=None,
            condition_metric="cosine"):
    _checks.check_assign(x, noise, metric, precision, solver, tol, groups, conditions,
                         condition_weight, condition_target_r, condition_metric)
    b, k = x.shape[0], noise.shape[0]
    if b == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    cost = torch.ops.immiscible.pairwise_distance(
        x.reshape(b, -1), noise.reshape(k, -1), metric, precision
    )
    if conditions is not None:
        if validate:
            _checks.check_finite("conditions", conditions)
        cost, _ = condition_cost(cost, conditions, condition_weight, condition_target_r,
                                 condition_metric)
    if groups is not None:
        cost = cost.masked_fill_(~group_mask(groups, k), float("inf"))
    return torch.ops.immiscible.linear_assignment(cost, solver, tol, validate)


@torch.library.register_fake("immiscible::assign")
def _assign_fake(x, noise, metric="l2", precision="fp16", solver="auto", tol=None, groups=None,
                 validate=True, conditions=None, condition_weight=None, condition_target_r=None,
                 condition_metric="cosine"):
    _checks.check_assign(x, noise, metric, precision, solver, tol, groups, conditions,
                         condition_weight, condition_target_r, condition_metric)
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
           groups: Optional[torch.Tensor] = None, validate: bool = True,
           conditions: Optional[torch.Tensor] = None, condition_weight: Optional[float] = None,
           condition_target_r: Optional[float] = None,
           condition_metric: str = "cosine") -> torch.Tensor:
    """x [B, ...], noise [K, ...] (K >= B) -> LongTensor [B] of distinct indices into noise that
    minimizes sum_i dist(x[i], noise[idx[i]]); with groups [B], images only take noise from
    their group's share of the pool; with conditions [B, ...] (C2OT), noise slot j carries the
    condition of image floor(j * B / K) and the cost is dist + w * condition_distance, w =
    condition_weight or the one condition_target_r picks (condition_weight_for_r)."""
    if isinstance(x, torch.Tensor):  # before the dispatcher, which rejects a non-tensor tersely
        _checks.check_conditions(x, conditions, condition_weight, condition_target_r,
                                 condition_metric)
    return torch.ops.immiscible.assign(x, noise, metric, precision, solver, tol, groups, validate,
                                       conditions, condition_weight, condition_target_r,
                                       condition_metric)
