"""immiscible_noise: Gaussian noise already coupled to a batch, the one line a training loop needs.

Methods (docs/NOISE.md gives cost and traffic):
  "assign"  B draws, minimum-distance assignment of the batch (the paper's method, default)
  "pool"    pool_factor * B draws, the batch takes its best B of them
  "knn"     per image k draws, keep the nearest (fused kernel on CUDA, immiscible_ops.knn)
  "flip"    control: assignment computed against the noise with its flattened dims reversed,
            applied to the unreversed noise (same permutation cost, no transport benefit)
  "none"    plain Gaussian noise
"knn" and "none" have no cross-image coupling, so scope="global" runs them locally on each rank.
"""

from typing import Optional

import torch

from immiscible_ops import knn as _knn
from immiscible_ops._checks import check_groups, check_positive_int
from immiscible_ops.ops import assign

METHODS = ("assign", "pool", "knn", "flip", "none")
ASSIGN_KWARGS = ("metric", "precision", "solver", "tol", "validate")
_KNN_METRICS = ("l2", "sqeuclidean")  # same argmin


def immiscible_noise(x: torch.Tensor, *, method: str = "assign",
                     generator: Optional[torch.Generator] = None,
                     groups: Optional[torch.Tensor] = None, k: int = 8, pool_factor: int = 2,
                     scope: str = "local", process_group=None, **assign_kwargs) -> torch.Tensor:
    """Returns noise shaped and typed like x [B, ...] for method "assign" | "pool" | "knn" |
    "flip" | "none" (module docstring); k: knn candidates per image; pool_factor: pool of
    pool_factor * B draws; groups [B]: class labels, images take noise from their class's share
    (ignored by "knn", whose candidates are per image); other keywords go to `assign`.
    scope "global" (a collective over torch.distributed `process_group`): one assignment for the
    whole job, see immiscible_ops.distributed; "local" (default): each rank on its own."""
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if scope not in ("local", "global"):
        raise ValueError(f"scope: expected 'local' or 'global', got {scope!r}")
    if scope == "global" and method in ("assign", "pool", "flip"):
        from immiscible_ops.distributed import immiscible_noise_global

        return immiscible_noise_global(x, group=process_group, method=method, generator=generator,
                                       groups=groups, pool_factor=pool_factor, **assign_kwargs)
    unknown = sorted(set(assign_kwargs) - set(ASSIGN_KWARGS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown keyword argument; expected k, pool_factor, "
                         f"groups or one of {', '.join(ASSIGN_KWARGS)}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
        raise ValueError("x: expected a floating-point tensor with a leading batch dimension")
    check_positive_int("k", k, "candidates per image")
    check_positive_int("pool_factor", pool_factor, "noise pool of pool_factor * B draws")
    check_groups(x, groups)

    if method == "knn":
        metric = assign_kwargs.get("metric", "l2")
        if metric not in _KNN_METRICS:
            raise ValueError(f"metric: method 'knn' supports {' or '.join(_KNN_METRICS)}, got {metric!r}")
        return _knn.knn_noise(x, k, generator=generator)

    b = x.shape[0]
    pool = pool_factor * b if method == "pool" else b
    noise = torch.randn((pool, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    if method == "none" or b == 0:
        return noise[:b]
    if method == "flip":
        # Reversing the flattened dims keeps every distance's distribution but breaks the
        # image-noise geometry the assignment would exploit.
        target = noise.reshape(b, -1).flip(-1).reshape(noise.shape)
        return noise[assign(x, target, groups=groups, **assign_kwargs)]
    return noise[assign(x, noise, groups=groups, **assign_kwargs)]
