"""Plain-torch references: the CPU implementation of pairwise_distance, the quantization the
GPU kernels reproduce, and helpers that tests and benchmarks share."""

from typing import Optional, Tuple

import numpy as np
import torch

from immiscible_ops._checks import check_knn, seed_value

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


# ---------------------------------------------------------------------------------------------
# KNN noise: Triton's Philox4x32 and normal transform in numpy (the CPU kernel of
# immiscible::knn_noise, bit-identical to the fused Triton kernel under TRITON_INTERPRET=1; the
# counter layout is in immiscible_ops/triton_knn.py), and the published materializing recipe,
# the baseline of benchmarks/bench_knn.py.

_PHILOX_KEY_A = np.uint32(0x9E3779B9)
_PHILOX_KEY_B = np.uint32(0xBB67AE85)
_PHILOX_ROUND_A = np.uint64(0xD2511F53)
_PHILOX_ROUND_B = np.uint64(0xCD9E8D57)
_REF_CHUNK = 1 << 22  # candidate elements per reference chunk (~16 MB float32) bounds CPU memory


def philox4x32(c0, c1, c2, c3, k0, k1, n_rounds: int = 10):
    """Philox4x32 on uint32 arrays (broadcast) with key (k0, k1), as triton.language.philox."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in (c0, c1, c2, c3))
    k0, k1 = np.uint32(k0), np.uint32(k1)
    for _ in range(n_rounds):
        p0 = _PHILOX_ROUND_A * c0.astype(np.uint64)
        p2 = _PHILOX_ROUND_B * c2.astype(np.uint64)
        c0, c1, c2, c3 = (
            (p2 >> np.uint64(32)).astype(np.uint32) ^ c1 ^ k0,
            p2.astype(np.uint32),
            (p0 >> np.uint64(32)).astype(np.uint32) ^ c3 ^ k1,
            p0.astype(np.uint32),
        )
        k0 = k0 + _PHILOX_KEY_A
        k1 = k1 + _PHILOX_KEY_B
    return c0, c1, c2, c3


def _uniform(bits: np.ndarray) -> np.ndarray:
    # tl.random.uint_to_uniform_float: fold the sign bit away, scale into [0, 1).
    signed = bits.view(np.int32)
    signed = np.where(signed < 0, ~signed, signed)
    return signed.astype(np.float32) * np.float32(4.6566127342e-10)


def _box_muller(u1: np.ndarray, u2: np.ndarray):
    u1 = np.maximum(np.float32(1.0e-7), u1)
    th = np.float32(6.283185307179586) * u2
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    return r * np.cos(th), r * np.sin(th)


def candidate_noise(seed, candidates, dim: int) -> torch.Tensor:
    """float32 [N, dim]: the noise of global candidate ids `candidates` [N] (image * k + c)."""
    with np.errstate(over="ignore"):  # the uint32 wrap-around is Philox's arithmetic
        s = seed_value(seed)
        ids = np.asarray(torch.as_tensor(candidates).cpu().numpy(), dtype=np.uint32)
        groups = -(-dim // 4)
        c0 = np.broadcast_to(np.arange(groups, dtype=np.uint32)[None, :], (ids.shape[0], groups))
        c1 = np.broadcast_to(ids[:, None], c0.shape)
        zero = np.zeros(c0.shape, dtype=np.uint32)
        r0, r1, r2, r3 = philox4x32(c0, c1, zero, zero, s & 0xFFFFFFFF, s >> 32)
        n1, n2 = _box_muller(_uniform(r0), _uniform(r1))
        n3, n4 = _box_muller(_uniform(r2), _uniform(r3))
    out = np.stack([n1, n2, n3, n4], axis=1).reshape(ids.shape[0], 4 * groups)[:, :dim]
    return torch.from_numpy(np.ascontiguousarray(out))


def knn_noise_reference(x: torch.Tensor, k: int, seed) -> Tuple[torch.Tensor, torch.Tensor]:
    """x [B, ...] -> (noise like x, LongTensor [B] chosen candidate), computed on the CPU in chunks."""
    check_knn(x, k)
    b = x.shape[0]
    dim = x[0].numel() if b else int(np.prod(x.shape[1:]))
    flat = x.detach().reshape(b, dim).cpu().double()
    noise = torch.empty(b, dim, dtype=torch.float32)
    index = torch.empty(b, dtype=torch.long)
    step = max(1, _REF_CHUNK // max(1, k * dim))
    for start in range(0, b, step):
        stop = min(b, start + step)
        ids = torch.arange(start * k, stop * k, dtype=torch.int64)
        cand = candidate_noise(seed, ids, dim).reshape(stop - start, k, dim)
        dist = (flat[start:stop, None, :] - cand.double()).square_().sum(-1)
        best = dist.argmin(-1)
        index[start:stop] = best
        noise[start:stop] = cand[torch.arange(stop - start), best]
    return noise.to(device=x.device, dtype=x.dtype).reshape(x.shape), index.to(x.device)


def knn_noise_materialized(x: torch.Tensor, k: int, *,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x [B, ...] -> noise like x, the published way: draw [B, k, D] candidates, argmin, gather.

    Benchmark baseline; its memory and traffic grow with k."""
    check_knn(x, k)
    b = x.shape[0]
    flat = x.reshape(b, 1, -1).float()
    cand = torch.randn((b, k, flat.shape[-1]), generator=generator, device=x.device)
    best = torch.cdist(flat, cand).squeeze(1).argmin(-1)
    return cand[torch.arange(b, device=x.device), best].to(x.dtype).reshape(x.shape)
