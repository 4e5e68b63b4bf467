"""immiscible_noise: Gaussian noise already coupled to a batch, the one line a training loop needs.

Methods (docs/NOISE.md gives cost and traffic):
  "assign"  B draws, minimum-distance assignment of the batch (the paper's method, default)
  "pool"    pool_size (default pool_factor * B) draws, the batch takes its best B of them
  "knn"     per image k candidates, keep the nearest: on CUDA the fused Philox kernel
            (immiscible_ops.knn); on the CPU, or with the caller's own `candidates`, the plain
            torch recipe of kohya-ss / OneTrainer (knn.select_nearest)
  "flip"    control: assignment computed against the noise with its flattened dims reversed,
            applied to the unreversed noise (same permutation cost, no transport benefit)
  "none"    plain Gaussian noise
"knn" and "none" have no cross-image coupling, so scope="global" runs them locally on each rank;
so does every method when there is no initialized process group or it has one process.
The result keeps x's memory format (channels_last latents get channels_last noise), as
torch.randn_like would; its values are the same as for contiguous x.
"""

from typing import Optional

import torch

from immiscible_ops import _checks
from immiscible_ops import knn as _knn
from immiscible_ops.ops import assign

_DEFAULT_K = 8


def _like(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """noise [B, ...] (contiguous, x's shape) laid out in memory as x is."""
    if x.is_contiguous():
        return noise
    return torch.empty_like(x, memory_format=torch.preserve_format).copy_(noise)


def _global_active(process_group) -> bool:
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size(process_group) > 1)


def immiscible_noise(x: torch.Tensor, *, method: str = "assign",
                     generator: Optional[torch.Generator] = None,
                     groups: Optional[torch.Tensor] = None,
                     conditions: Optional[torch.Tensor] = None, k: Optional[int] = None,
                     pool_factor: int = 2, pool_size: Optional[int] = None,
                     candidates: Optional[torch.Tensor] = None,
                     distance_dtype: Optional[torch.dtype] = None,
                     scope: str = "local", process_group=None, **assign_kwargs) -> torch.Tensor:
    """Returns noise shaped, typed and laid out like x [B, ...] for method "assign" | "pool" |
    "knn" | "flip" | "none" (module docstring). pool: pool_size draws (any K >= B), default
    pool_factor * B. knn: k candidates per image (default 8), or the caller's `candidates`
    [B, k, ...] (then k is candidates.shape[1]); the nearest in L2, on the caller's candidates and
    on the CPU measured as torch.linalg.vector_norm in distance_dtype (default: the candidates'
    and x's promoted dtype), lowest index on ties (knn.select_nearest). groups [B]: class labels,
    images take noise from their class's share (ignored by "knn", whose candidates are per
    image); conditions [B, ...] with condition_weight= or condition_target_r= (and
    condition_metric=): the C2OT cost, noise slot j carrying image j's condition (ignored by "knn"
    and "none", which couple nothing); other keywords go to `assign`. scope "global": one
    assignment for the whole torch.distributed job (`process_group`,
    immiscible_ops.distributed; cost_precision= applies there), the local solve without an
    initialized group or with one process; "local" (default): each rank on its own."""
    _checks.check_noise_options(method, scope, candidates, distance_dtype, pool_size)
    if scope == "global" and method in _checks.GLOBAL_METHODS and _global_active(process_group):
        from immiscible_ops.distributed import immiscible_noise_global

        noise = immiscible_noise_global(x, group=process_group, method=method,
                                        generator=generator, groups=groups,
                                        conditions=conditions,
                                        pool_factor=pool_factor, pool_size=pool_size,
                                        **assign_kwargs)
        return _like(x, noise)
    assign_kwargs = _local_kwargs(scope, assign_kwargs)
    _checks.check_batch(x)
    _checks.check_positive_int("pool_factor", pool_factor, "noise pool of pool_factor * B draws")
    _checks.check_groups(x, groups)
    _checks.check_conditions(x, conditions, assign_kwargs.get("condition_weight"),
                             assign_kwargs.get("condition_target_r"),
                             assign_kwargs.get("condition_metric", "cosine"))

    if method == "knn":
        _checks.check_knn_metric(assign_kwargs.get("metric", "l2"))
        return _like(x, _knn_noise(x, k, candidates, distance_dtype, generator))

    b = x.shape[0]
    pool = b
    if method == "pool":
        if pool_size is not None:
            _checks.check_positive_int("pool_size", pool_size, "noise pool of pool_size draws")
        pool = pool_factor * b if pool_size is None else pool_size
        _checks.check_pool(pool, b)
    noise = torch.randn((pool, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    if method == "none" or b == 0:
        return _like(x, noise[:b])
    if method == "flip":
        # Reversing the flattened dims keeps every distance's distribution but breaks the
        # image-noise geometry the assignment would exploit.
        target = noise.reshape(pool, -1).flip(-1).reshape(noise.shape)
        return _like(x, noise[assign(x, target, groups=groups, conditions=conditions,
                                     **assign_kwargs)])
    return _like(x, noise[assign(x, noise, groups=groups, conditions=conditions, **assign_kwargs)])


def _local_kwargs(scope: str, assign_kwargs: dict) -> dict:
    """assign's keywords, with the global-only ones checked and dropped for a local solve."""
    assign_kwargs = dict(assign_kwargs)
    if scope == "global" and "cost_precision" in assign_kwargs:
        _checks.check_cost_precision(assign_kwargs.pop("cost_precision"))
    _checks.check_assign_kwargs(assign_kwargs)
    return assign_kwargs


def _knn_noise(x, k, candidates, distance_dtype, generator) -> torch.Tensor:
    if candidates is not None:
        _checks.check_candidates(x, candidates, distance_dtype)
        _checks.check_k_matches(k, candidates)
        return _knn.select_nearest(x, candidates, distance_dtype=distance_dtype)
    k = _DEFAULT_K if k is None else k
    _checks.check_positive_int("k", k, "candidates per image")
    _checks.check_distance_dtype(distance_dtype)
    if x.is_cuda and _knn.HAS_TRITON and distance_dtype is None:
        return _knn.knn_noise(x, k, generator=generator)
    return _knn.knn_noise_randn(x, k, generator=generator, distance_dtype=distance_dtype)
