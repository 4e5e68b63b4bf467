"""coupling_stats: what a coupling did to a batch, for logs (the numbers the papers quote)."""

from typing import Optional

import torch

from immiscible_ops import _checks
from immiscible_ops.ops import condition_distance, condition_slots


def _row_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    diff = a.reshape(a.shape[0], -1).double() - b.reshape(b.shape[0], -1).double()
    if metric == "l1":
        return diff.abs().sum(1)
    sq = diff.square().sum(1)
    return sq if metric == "sqeuclidean" else sq.sqrt()


@torch.no_grad()
def coupling_stats(x: torch.Tensor, noise: torch.Tensor, index: torch.Tensor,
                   conditions: Optional[torch.Tensor] = None, *, metric: str = "l2",
                   condition_metric: str = "cosine") -> dict:
    """x [B, ...], noise [K, ...] (K >= B, the draws before coupling), index [B] (image i took
    noise[index[i]], as `assign` returns) -> dict of floats:

      distance_independent  mean dist(x_i, noise_i), the pairing without coupling
      distance_coupled      mean dist(x_i, noise_index[i])
      distance_reduction    1 - coupled / independent (Immiscible Diffusion's "2 %" on ImageNet)
      moved                 fraction of images whose noise is not their independent draw
    and with conditions [B, ...], noise slot j carrying image floor(j * B / K)'s condition as in
    `assign`: condition_distance_independent / _coupled (mean condition distance between an
    image and the image its noise was drawn for) and _random (the mean over all B x K pairs: what
    a coupling blind to the condition tends to), in condition_metric "cosine" | "sqeuclidean".
    Reads the device (a sync): meant for logging every few hundred steps."""
    _checks.check_assign(x, noise, metric, "fp32", "auto", None, None)
    b, k = x.shape[0], noise.shape[0]
    if not isinstance(index, torch.Tensor) or index.shape != (b,) or index.is_floating_point():
        raise ValueError(f"index: expected integer indices [{b}], got "
                         f"{tuple(index.shape) if isinstance(index, torch.Tensor) else index!r}")
    if index.device != x.device:
        raise ValueError(f"index: on {index.device}, x on {x.device}")
    if b and not bool(((index >= 0) & (index < k)).all()):
        raise ValueError(f"index: entries must lie in [0, {k})")
    if conditions is not None:
        _checks.check_conditions(x, conditions, 0.0, None, condition_metric)
    if b == 0:
        raise ValueError("x: empty batch, nothing to measure")
    independent = _row_distance(x, noise[:b], metric).mean()
    coupled = _row_distance(x, noise[index], metric).mean()
    out = {"distance_independent": float(independent), "distance_coupled": float(coupled),
           "distance_reduction": float(1 - coupled / independent) if independent > 0 else 0.0,
           "moved": float((index != torch.arange(b, device=index.device)).double().mean())}
    if conditions is not None:
        cond = condition_distance(conditions, conditions[condition_slots(b, k, x.device)],
                                  condition_metric)
        rows = torch.arange(b, device=x.device)
        out["condition_distance_independent"] = float(cond[rows, rows].double().mean())
        out["condition_distance_coupled"] = float(cond[rows, index].double().mean())
        out["condition_distance_random"] = float(cond.double().mean())
    return out
