"""Plain-torch references: the CPU implementation of pairwise_distance, the quantization the
GPU kernels reproduce, and helpers that tests and benchmarks share."""

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value
_CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}


def fp8_row_scale(t: torch.Tensor) -> torch.Tensor:
    """Per-row scale [..., R, 1] that maps each row's largest |value| onto the e4m3 maximum."""
    amax = t.detach().abs().amax(dim=-1, keepdim=True).float()
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def quantize(t: torch.Tensor, precision: str) -> torch.Tensor:
    """Rounds t [..., R, D] to `precision` and returns it as float32 (fp8: e4m3 with a per-row scale)."""
    if precision == "fp32":
        return t.float()
    if precision == "fp8":
        scale = fp8_row_scale(t)
        return (t.float() / scale).to(FP8_DTYPE).float() * scale
    return t.to(_CASTS[precision]).float()


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "l2",
                      precision: str = "fp32") -> torch.Tensor:
    """x [..., N, D], y [..., M, D] -> float32 [..., N, M], after quantizing both to `precision`."""
    xq, yq = quantize(x, precision), quantize(y, precision)
    if metric == "l1":
        return torch.cdist(xq, yq, p=1.0)
    # |x|^2 + |y|^2 - 2 x.y, the formula the tensor-core kernel uses.
    sq = xq.square().sum(-1).unsqueeze(-1) + yq.square().sum(-1).unsqueeze(-2)
    sq = (sq - 2.0 * (xq @ yq.transpose(-1, -2))).clamp_min_(0.0)
    return sq.sqrt_() if metric == "l2" else sq


def assignment_cost(cost: torch.Tensor, row_to_col: torch.Tensor) -> torch.Tensor:
    """Total cost [...] of an assignment row_to_col [..., N] on cost [..., N, M], in float64."""
    return cost.double().gather(-1, row_to_col.unsqueeze(-1)).squeeze(-1).sum(-1)
