"""Input validation shared by the ops and their fake kernels: one place, ValueError, the
argument named. Shape and dtype checks need no data. Value faults (NaN, -inf, infeasible) are
found by the solver kernels themselves and come back as a status tensor; reading it
(`check_status`) is the one step that synchronizes with a GPU, so the ops can switch it off."""

import math
import os

import torch

METRICS = ("l2", "sqeuclidean", "l1")
PRECISIONS = ("fp32", "fp16", "bf16", "fp8")
SOLVERS = ("auto", "exact", "auction")


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


def check_assign(x, noise, metric, precision, solver, tol, groups) -> None:
    """assign(x [B, ...], noise [K, ...], groups [B]?)."""
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


# Philox counters per seed: the candidate id image * k + c is one uint32 word of the counter.
MAX_KNN_CANDIDATES = 2**32
SEED_HIGH = 2**63 - 1


def check_knn(x, k) -> None:
    """knn_noise(x [B, ...], k)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x: expected a tensor with a leading batch dimension [B, ...]")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    check_positive_int("k", k, "candidates per image")
    if x.shape[0] * k > MAX_KNN_CANDIDATES:
        raise ValueError(f"k: B * k = {x.shape[0] * k} candidates exceed the 2^32 Philox counters")


def check_seed_tensor(seed) -> None:
    """A Philox seed as the knn_noise operator takes it: int64 [1] (its value is read on the
    device; draw_seed gives one)."""
    if not isinstance(seed, torch.Tensor) or seed.numel() != 1 or seed.dtype != torch.int64:
        shape = tuple(seed.shape) if isinstance(seed, torch.Tensor) else type(seed).__name__
        dtype = seed.dtype if isinstance(seed, torch.Tensor) else ""
        raise ValueError(f"seed: expected an int64 tensor of one element, got {dtype} {shape}")


def seed_value(seed) -> int:
    """The seed (int, or a one-element tensor) as an int in [0, 2^63)."""
    value = int(seed.reshape(-1)[0].item()) if isinstance(seed, torch.Tensor) else int(seed)
    if not 0 <= value <= SEED_HIGH:
        raise ValueError(f"seed: expected an integer in [0, 2^63), got {value}")
    return value
