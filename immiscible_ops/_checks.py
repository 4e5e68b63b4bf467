"""Input validation of every public surface of the package, in one place: ValueError, the argument
named. Sections below, one per surface: the operators (ops.py, and their fake kernels),
immiscible_noise (noise.py), the KNN noise functions (knn.py), the global assignment
(distributed.py), C2OT's sampler (integrations/c2ot.py), the torchcfm sampler
(integrations/torchcfm.py) and auction_on_host (testing.py). Two surfaces keep their own checks,
for a reason: scipy_compat raises scipy's own exceptions and messages (its contract is scipy's),
and the trainer's Config.validate checks a run's configuration, not a call's arguments.

Shape and dtype checks need no data. Value faults (NaN, -inf, infeasible) are found by the
solver kernels themselves and come back as a status tensor; reading it (`check_status`) is the
one step that synchronizes with a GPU, so the ops can switch it off.

A missing optional dependency is an ImportError naming the pip line (`missing_dependency`)."""

import math
import os

import torch

METRICS = ("l2", "sqeuclidean", "l1")
PRECISIONS = ("fp32", "fp16", "bf16", "fp8")
SOLVERS = ("auto", "exact", "auction", "certified")
CONDITION_METRICS = ("cosine", "sqeuclidean")
# Philox seeds (knn.py) and the seed rank 0 draws for a global pool (distributed.py): int64
# in [0, 2^63), the range torch.randint can draw without overflowing int64.
SEED_HIGH = 2**63 - 1


def missing_dependency(what: str, install: str) -> ImportError:
    """The ImportError for an optional dependency: what needs it and the line that installs it;
    raise it `from` the original ImportError."""
    return ImportError(f"{what}; install it with: {install}")


# ---------------------------------------------------------------------------------------------
# Building blocks


def check_choice(name: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def check_floating(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")


def check_positive_int(name: str, value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1 ({what}), got {value!r}")


def check_groups(x: torch.Tensor, groups) -> None:
    """groups: None, or integer class labels [B] on x's device."""
    if groups is None:
        return
    if not isinstance(groups, torch.Tensor) or groups.dim() != 1 or groups.shape[0] != x.shape[0]:
        shape = tuple(groups.shape) if isinstance(groups, torch.Tensor) else type(groups).__name__
        raise ValueError(f"groups: expected shape [{x.shape[0]}] (one label per image), got {shape}")
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise ValueError(f"groups: expected integer labels, got dtype {groups.dtype}")
    if groups.device != x.device:
        raise ValueError(f"groups: on {groups.device}, x on {x.device}")


def check_tol(tol) -> None:
    if tol is not None and not (tol > 0 and tol < float("inf")):
        raise ValueError(f"tol: expected a positive finite number or None, got {tol}")


def check_auction_budget(device: torch.device, solver: str) -> None:
    """IMMISCIBLE_AUCTION_MAX_PASSES, read by the CPU auction: unset, or a positive number."""
    text = os.environ.get("IMMISCIBLE_AUCTION_MAX_PASSES")
    if text is None or solver != "auction" or device.type != "cpu":
        return
    try:
        passes = float(text)
    except ValueError:
        passes = math.nan
    if not (passes > 0 and math.isfinite(passes)):
        raise ValueError(
            "IMMISCIBLE_AUCTION_MAX_PASSES: expected a positive number of passes over the cost "
            f"matrix, got {text!r}")


def check_cost(cost: torch.Tensor, solver: str, tol) -> None:
    """Shape/dtype/options of a linear_assignment call (no data read)."""
    if cost.dim() < 2:
        raise ValueError(f"cost: expected at least 2 dims [..., N, M], got shape {tuple(cost.shape)}")
    check_floating("cost", cost)
    n, m = cost.shape[-2], cost.shape[-1]
    if n > m:
        raise ValueError(
            f"cost: more rows than columns (N={n} > M={m}); every row needs its own column. "
            "Pass the transpose and invert the result."
        )
    check_choice("solver", solver, SOLVERS)
    check_tol(tol)
    check_auction_budget(cost.device, solver)


# solve_batched's status codes (csrc/ops.cpp) and what each means for the caller.
_STATUS_MESSAGES = {
    1: "no feasible assignment: every assignment uses a +inf entry",
    2: "contains NaN",
    3: "contains -inf; only +inf (a forbidden pair) is allowed",
}


def check_status(status: torch.Tensor, batch_shape) -> None:
    """Raises for the first problem whose solve_batched status is not 0 (reads the device)."""
    bad = torch.nonzero(status).flatten()
    if not bad.numel():
        return
    first = int(bad[0])
    where = ""
    if len(batch_shape):
        index = torch.unravel_index(torch.tensor(first), tuple(batch_shape))
        where = f" (problem at batch index {tuple(int(i) for i in index)})"
    raise ValueError(
        f"cost: {_STATUS_MESSAGES[int(status[first])]}{where}; "
        f"{bad.numel()} of {status.numel()} problems rejected"
    )


def check_pair(x: torch.Tensor, y: torch.Tensor, metric: str, precision: str) -> None:
    """pairwise_distance(x [..., N, D], y [..., M, D])."""
    for name, t in (("x", x), ("y", y)):
        if t.dim() < 2:
            raise ValueError(f"{name}: expected at least 2 dims [..., rows, D], got shape {tuple(t.shape)}")
        check_floating(name, t)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"y: feature dim {y.shape[-1]} differs from x's {x.shape[-1]}")
    try:
        torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"y: batch dims {tuple(y.shape[:-2])} do not broadcast with x's {tuple(x.shape[:-2])}"
        ) from None
    if x.device != y.device:
        raise ValueError(f"y: on {y.device}, x on {x.device}; both must be on one device")
    check_choice("metric", metric, METRICS)
    check_choice("precision", precision, PRECISIONS)


# ---------------------------------------------------------------------------------------------
# Operators (ops.py)


def check_conditions(x: torch.Tensor, conditions, weight, target_r, metric) -> None:
    """conditions [B, ...] floating on x's device, with exactly one of weight >= 0 or
    target_r in (0, 1]; shape, dtype and options only (NaN needs the data: check_finite)."""
    if conditions is None:
        for name, value in (("condition_weight", weight), ("condition_target_r", target_r)):
            if value is not None:
                raise ValueError(f"{name}: given without conditions")
        return
    if not isinstance(conditions, torch.Tensor):
        raise ValueError(f"conditions: expected a tensor [B, ...], got {type(conditions).__name__}")
    if conditions.dim() < 1 or conditions.shape[0] != x.shape[0]:
        raise ValueError(f"conditions: expected shape [{x.shape[0]}, ...] (one condition per "
                         f"image), got {tuple(conditions.shape)}")
    if not conditions.is_floating_point():
        raise ValueError("conditions: expected a floating-point tensor, got dtype "
                         f"{conditions.dtype}")
    if conditions.device != x.device:
        raise ValueError(f"conditions: on {conditions.device}, x on {x.device}")
    if (weight is None) == (target_r is None):
        raise ValueError("condition_weight, condition_target_r: give exactly one (a fixed "
                         "weight w, or the target fraction r that chooses w), got "
                         f"{weight!r} and {target_r!r}")
    if weight is not None and not (weight >= 0 and math.isfinite(weight)):
        raise ValueError(f"condition_weight: expected a finite number >= 0, got {weight!r}")
    if target_r is not None and not (0 < target_r <= 1):
        raise ValueError(f"condition_target_r: expected a fraction in (0, 1], got {target_r!r}")
    check_choice("condition_metric", metric, CONDITION_METRICS)


def check_finite(name: str, t: torch.Tensor) -> None:
    """Reads the data (a GPU sync): raises if t holds NaN or +-inf."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or inf")


def check_assign(x, noise, metric, precision, solver, tol, groups, conditions=None,
                 condition_weight=None, condition_target_r=None,
                 condition_metric="cosine") -> None:
    """assign(x [B, ...], noise [K, ...], groups [B]?, conditions [B, ...]?)."""
    if x.dim() < 1 or noise.dim() < 1:
        raise ValueError("x, noise: expected a leading batch dimension")
    check_floating("x", x)
    check_floating("noise", noise)
    if x.shape[1:] != noise.shape[1:]:
        raise ValueError(
            f"noise: trailing shape {tuple(noise.shape[1:])} differs from x's {tuple(x.shape[1:])}"
        )
    if noise.shape[0] < x.shape[0]:
        raise ValueError(
            f"noise: pool of {noise.shape[0]} is smaller than the batch of {x.shape[0]}"
        )
    if x.device != noise.device:
        raise ValueError(f"noise: on {noise.device}, x on {x.device}; both must be on one device")
    check_choice("metric", metric, METRICS)
    check_choice("precision", precision, PRECISIONS)
    check_choice("solver", solver, SOLVERS)
    check_tol(tol)
    check_auction_budget(x.device, solver)
    check_groups(x, groups)
    check_conditions(x, conditions, condition_weight, condition_target_r, condition_metric)


# ---------------------------------------------------------------------------------------------
# immiscible_noise (noise.py)

NOISE_METHODS = ("assign", "pool", "knn", "flip", "none")
SCOPES = ("local", "global")
ASSIGN_KWARGS = ("metric", "precision", "solver", "tol", "validate", "condition_weight",
                 "condition_target_r", "condition_metric")
KNN_METRICS = ("l2", "sqeuclidean")  # same argmin


def check_batch(x) -> None:
    """x [B, ...]: a floating-point tensor with a batch dim (immiscible_noise, select_nearest)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
        raise ValueError("x: expected a floating-point tensor with a leading batch dimension")


def check_noise_options(method: str, scope: str, candidates, distance_dtype, pool_size) -> None:
    """immiscible_noise's keywords that only some methods take; no tensor is read."""
    check_choice("method", method, NOISE_METHODS)
    if scope not in SCOPES:
        raise ValueError(f"scope: expected 'local' or 'global', got {scope!r}")
    if candidates is not None and method != "knn":
        raise ValueError("candidates: only method 'knn' picks among candidates, got method "
                         f"{method!r}")
    if distance_dtype is not None and method != "knn":
        raise ValueError(f"distance_dtype: only method 'knn' takes it, got method {method!r}")
    if pool_size is not None and method != "pool":
        raise ValueError(f"pool_size: only method 'pool' draws a pool, got method {method!r}")


def check_assign_kwargs(assign_kwargs: dict) -> None:
    """The keywords immiscible_noise passes on to assign."""
    unknown = sorted(set(assign_kwargs) - set(ASSIGN_KWARGS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown keyword argument; expected k, pool_factor, "
                         f"pool_size, candidates, distance_dtype, groups, conditions or one of "
                         f"{', '.join(ASSIGN_KWARGS)}")


def check_knn_metric(metric: str) -> None:
    if metric not in KNN_METRICS:
        raise ValueError(f"metric: method 'knn' supports {' or '.join(KNN_METRICS)}, "
                         f"got {metric!r}")


def check_pool(pool: int, batch: int) -> None:
    if pool < batch:
        raise ValueError(f"pool_size: a pool of {pool} is smaller than the batch of {batch}")


# ---------------------------------------------------------------------------------------------
# KNN noise (knn.py)

MAX_PHILOX_COUNTER = 2**32  # candidate counters per seed: B * k of them


def check_knn(x: torch.Tensor, k) -> None:
    """knn_noise(x [B, ...], k)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x: expected a tensor with a leading batch dimension [B, ...]")
    check_floating("x", x)
    check_positive_int("k", k, "candidates per image")
    if x.shape[0] * k > MAX_PHILOX_COUNTER:
        raise ValueError(f"k: B * k = {x.shape[0] * k} candidates exceed the 2^32 Philox counters")


def check_seed(value: int) -> None:
    if not 0 <= value <= SEED_HIGH:
        raise ValueError(f"seed: expected an integer in [0, 2^63), got {value}")


def check_seed_tensor(seed) -> None:
    """A Philox seed as the knn_noise operator takes it: int64 [1], its value read on the device."""
    if not isinstance(seed, torch.Tensor):
        raise ValueError(f"seed: expected an int64 tensor of one element, got "
                         f"{type(seed).__name__}")
    if seed.numel() != 1 or seed.dtype != torch.int64:
        raise ValueError(f"seed: expected an int64 tensor of one element, got {seed.dtype} "
                         f"shape {tuple(seed.shape)}")


def seed_value(seed) -> int:
    """The seed (an int or a one-element tensor) as an int in [0, 2^63)."""
    value = int(seed.reshape(-1)[0].item()) if isinstance(seed, torch.Tensor) else int(seed)
    check_seed(value)
    return value


def check_distance_dtype(distance_dtype) -> None:
    if distance_dtype is not None and (not isinstance(distance_dtype, torch.dtype)
                                       or not distance_dtype.is_floating_point):
        raise ValueError("distance_dtype: expected a floating torch.dtype or None, got "
                         f"{distance_dtype!r}")


def check_candidates(x: torch.Tensor, candidates, distance_dtype) -> None:
    """select_nearest(x [B, ...], candidates [B, k, ...], distance_dtype)."""
    check_batch(x)
    if not isinstance(candidates, torch.Tensor) or not candidates.is_floating_point():
        raise ValueError("candidates: expected a floating-point tensor [B, k, ...]")
    want = (x.shape[0], "k", *x.shape[1:])
    if (candidates.dim() != x.dim() + 1 or candidates.shape[0] != x.shape[0]
            or candidates.shape[2:] != x.shape[1:]):
        raise ValueError(f"candidates: expected shape {want} for x of shape {tuple(x.shape)}, "
                         f"got {tuple(candidates.shape)}")
    if candidates.shape[1] < 1:
        raise ValueError("candidates: expected at least one candidate per image (k >= 1)")
    if candidates.device != x.device:
        raise ValueError(f"candidates: on {candidates.device}, x on {x.device}")
    check_distance_dtype(distance_dtype)


def check_k_matches(k, candidates: torch.Tensor) -> None:
    if k is not None and k != candidates.shape[1]:
        raise ValueError(f"k: {k} differs from the {candidates.shape[1]} candidates given per "
                         "image")


# ---------------------------------------------------------------------------------------------
# Global assignment (distributed.py)

GLOBAL_METHODS = ("assign", "pool", "flip")
COST_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GLOBAL_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
GLOBAL_MAX_DIMS = 8  # trailing dims a rank's descriptor has room for


def check_cost_precision(cost_precision) -> None:
    if cost_precision not in COST_PRECISIONS:
        raise ValueError(f"cost_precision: expected one of {', '.join(COST_PRECISIONS)}, "
                         f"got {cost_precision!r}")


def check_global(x, groups, method, pool_factor, pool_size, cost_precision, kwargs,
                 conditions=None) -> None:
    """immiscible_noise_global's arguments on one rank (agreement across ranks is checked after
    the descriptors are exchanged)."""
    if method not in GLOBAL_METHODS:
        raise ValueError(f"method: unknown global method {method!r}; expected one of "
                         f"{', '.join(GLOBAL_METHODS)} (knn and none have no cross-image coupling: "
                         "use immiscible_noise on each rank)")
    unknown = sorted(set(kwargs) - set(ASSIGN_KWARGS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown keyword argument")
    check_cost_precision(cost_precision)
    check_positive_int("pool_factor", pool_factor, "noise pool of pool_factor * B draws")
    if pool_size is not None:
        if method != "pool":
            raise ValueError(f"pool_size: only method 'pool' draws a pool, got method {method!r}")
        check_positive_int("pool_size", pool_size, "noise pool of pool_size draws for the job")
    if cost_precision == "fp16" and kwargs.get("metric", "l2") != "l2":
        raise ValueError("cost_precision: fp16 overflows for l1/sqeuclidean distances of "
                         "large inputs; use bf16 or fp32")
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.dtype not in GLOBAL_DTYPES:
        raise ValueError("x: expected a float32/float16/bfloat16/float64 tensor [B, ...]")
    if x.dim() - 1 > GLOBAL_MAX_DIMS:
        raise ValueError(f"x: at most {GLOBAL_MAX_DIMS} dims after the batch, got {x.dim() - 1}")
    check_groups(x, groups)
    check_conditions(x, conditions, kwargs.get("condition_weight"),
                     kwargs.get("condition_target_r"), kwargs.get("condition_metric", "cosine"))


# ---------------------------------------------------------------------------------------------
# C2OT's sampler (integrations/c2ot.py)

# C2OT's norm names -> this package's metric names
C2OT_X_NORMS = {"l2_squared": "sqeuclidean", "l2": "l2"}
C2OT_CONDITION_NORMS = {"cosine": "cosine", "l2_squared": "sqeuclidean"}


def check_c2ot_sampler(condition_weight, target_r, max_num_iter, target_r_tol, x_norm,
                       condition_norm, solver) -> None:
    """OTConditionalPlanSampler's constructor (C2OT's arguments, and ours: solver)."""
    check_choice("x_norm", x_norm, tuple(C2OT_X_NORMS))
    check_choice("condition_norm", condition_norm, tuple(C2OT_CONDITION_NORMS))
    check_choice("solver", solver, ("auto", "exact", "auction"))
    check_positive_int("max_num_iter", max_num_iter, "C2OT's search iterations")
    if not target_r_tol > 0:
        raise ValueError(f"target_r_tol: expected a positive tolerance, got {target_r_tol!r}")
    if condition_weight is not None and not condition_weight >= 0:
        raise ValueError(f"condition_weight: expected a number >= 0, got {condition_weight!r}")
    if target_r is not None and not 0 < target_r <= 1:
        raise ValueError(f"target_r: expected a fraction in (0, 1], got {target_r!r}")


def check_c2ot_plan(x0, x1, y0, y1, condition_aware: bool) -> None:
    """sample_plan_with_labels(x0 [N, ...], x1 [N, ...], y0, y1 [N, ...]); reads y0 and y1 for
    NaN when the plan is condition-aware (the solve synchronizes anyway)."""
    for name, t in (("x0", x0), ("x1", x1)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise ValueError(f"{name}: expected a tensor [N, ...]")
        check_floating(name, t)
    if x0.shape[0] != x1.shape[0] or x0.shape[1:] != x1.shape[1:]:
        raise ValueError(f"x1: shape {tuple(x1.shape)} differs from x0's {tuple(x0.shape)}; "
                         "a permutation plan needs equal batches")
    if x0.device != x1.device:
        raise ValueError(f"x1: on {x1.device}, x0 on {x0.device}")
    if not condition_aware:
        return
    if y0 is None or y1 is None:
        raise ValueError("y0, y1: the condition-aware plan needs both conditions")
    for name, y in (("y0", y0), ("y1", y1)):
        if not isinstance(y, torch.Tensor) or y.dim() < 1 or y.shape[0] != x0.shape[0]:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"{name}: expected [{x0.shape[0]}, ...] (one condition per "
                             f"sample), got {shape}")
        if y.device != x0.device:
            raise ValueError(f"{name}: on {y.device}, x0 on {x0.device}")
        if y.is_complex():
            raise ValueError(f"{name}: expected real conditions, got dtype {y.dtype}")
        check_finite(name, y.float())
    if y0[0].numel() != y1[0].numel():
        raise ValueError(f"y1: {y1[0].numel()} values per condition, y0 has {y0[0].numel()}")


# ---------------------------------------------------------------------------------------------
# torchcfm's sampler (integrations/torchcfm.py)

OT_METHODS = ("exact", "sinkhorn", "unbalanced", "partial")


def check_equal_batches(x0: torch.Tensor, x1: torch.Tensor) -> None:
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"x1: batch of {x1.shape[0]} differs from x0's {x0.shape[0]}; "
                         "only equal batches have a permutation plan")


# ---------------------------------------------------------------------------------------------
# auction_on_host (testing.py)

HOST_GROUPS = ("block", "grid")


def check_auction_on_host(cost, group: str, threads, blocks, tol) -> None:
    """cost [B, N, M] or [N, M] float32, N <= M; the emulated launch's shape."""
    if not isinstance(cost, torch.Tensor):
        raise ValueError(f"cost: expected a torch.Tensor, got {type(cost).__name__}")
    if cost.dtype != torch.float32:
        raise ValueError(f"cost: expected float32, got {cost.dtype}")
    if cost.dim() not in (2, 3):
        raise ValueError(f"cost: expected [B, N, M] or [N, M], got shape {tuple(cost.shape)}")
    n, m = cost.shape[-2:]
    if n > m:
        raise ValueError(f"cost: needs N <= M, got N={n}, M={m}")
    if m >= 2**30:
        raise ValueError("cost: M must be below 2^30")
    if group not in HOST_GROUPS:
        raise ValueError(f"group: expected 'block' or 'grid', got {group!r}")
    if not isinstance(threads, int) or threads % 32 != 0 or not 32 <= threads <= 1024:
        raise ValueError(f"threads: expected a multiple of 32 in 32..1024, got {threads!r}")
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks: expected a positive int, got {blocks!r}")
    check_tol(tol)  # as linear_assignment: None (the default) or a positive number
