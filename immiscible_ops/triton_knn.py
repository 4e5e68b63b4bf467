"""The fused KNN-noise kernel (CUDA kernel of immiscible::knn_noise) and its launcher: per image
draw k candidate Gaussian noises and keep the nearest (L2), without storing a candidate.

Each element is generated from a counter-based RNG (Philox4x32-10, the one behind `tl.randn4x`),
distances are accumulated on the fly, and only the winner is regenerated from its counter and
written: memory O(B*D) whatever k (the published recipe materializes [B, k, D] candidates:
reference.knn_noise_materialized).

Counter layout, shared with the CPU kernel (reference.knn_noise_reference), so any noise can be
regenerated:
    key       = (seed & 0xffffffff, seed >> 32)           seed: int64 in [0, 2^63)
    counter   = (g, i * k + c, 0, 0)                       image i, candidate c, group g < ceil(D/4)
    Philox4x32-10(counter, key) -> 4 uint32 -> 4 normals (Triton's Box-Muller, two pairs)
    normal j of group g is element j * ceil(D/4) + g of the flattened candidate.

The reference reproduces Triton's arithmetic in numpy float32 and is bit-identical to this kernel
under TRITON_INTERPRET=1 (the interpreter evaluates log/cos/sin with the same numpy functions).
On a GPU the integer stream is identical, but log/sqrt/cos/sin are the device's own
approximations, so normals can differ from the reference in the last ulps. Distances are
accumulated in float64 (x and the noise are float32-exact there, squares are exact), so the
argmin does not depend on the summation order of either implementation.
"""

from typing import Tuple

import torch

from immiscible_ops import _checks

try:
    import triton
    import triton.language as tl
    from triton.language.random import pair_uniform_to_normal, uint_to_uniform_float
except ImportError as error:  # the package imports without it; CUDA knn then runs the reference
    raise _checks.missing_dependency("the fused knn kernel (immiscible_ops.triton_knn) needs "
                                     "Triton", "pip install triton") from error

_KNN_TILE_ELEMENTS = 2048  # [K_TILE, BLOCK] elements of the kernel's register tile
_KNN_MAX_K_TILE = 512


@triton.jit
def _normals4(seed, g, cand):
    # Four normals per Philox call (both Box-Muller outputs of both pairs); tl.randn uses one.
    zero = g * 0
    r0, r1, r2, r3 = tl.philox(seed, g, cand, zero, zero)
    n1, n2 = pair_uniform_to_normal(uint_to_uniform_float(r0), uint_to_uniform_float(r1))
    n3, n4 = pair_uniform_to_normal(uint_to_uniform_float(r2), uint_to_uniform_float(r3))
    return n1, n2, n3, n4

@triton.jit
def _to_out(n, ty: tl.constexpr):
    if ty == tl.bfloat16:
        # Round to nearest even by hand: the interpreter truncates fp32 -> bf16, the GPU rounds.
        bits = n.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return n.to(ty)

@triton.jit
def _sq_dist(x_row, e, valid, n):
    xv = tl.load(x_row + e, mask=valid, other=0.0).to(tl.float64)
    d = tl.where(valid[None, :], xv[None, :] - n.to(tl.float64), 0.0)
    return tl.sum(d * d, axis=1)

@triton.jit
def _knn_noise_kernel(
    x_ptr,  # [B, D] any float dtype
    out_ptr,  # [B, D] x's dtype
    index_ptr,  # [B] int64
    seed_ptr,  # [1] int64
    D, D4, K,
    K_TILE: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    seed = tl.load(seed_ptr)
    x_row = x_ptr + i * D
    best = tl.full([], 0, tl.int32)
    best_dist = tl.full([], float("inf"), tl.float64)
    # Candidates in tiles of K_TILE (one tile when k <= K_TILE), so the registers a tile needs
    # do not grow with k.
    for c0 in range(0, K, K_TILE):
        c = c0 + tl.arange(0, K_TILE)
        cand = (i * K + c).to(tl.uint32)
        cand2 = tl.broadcast_to(cand[:, None], (K_TILE, BLOCK))
        dist = tl.zeros((K_TILE,), dtype=tl.float64)
        for g0 in range(0, D4, BLOCK):
            g = g0 + tl.arange(0, BLOCK)
            in_row = g < D4
            g2 = tl.broadcast_to(g.to(tl.uint32)[None, :], (K_TILE, BLOCK))
            n1, n2, n3, n4 = _normals4(seed, g2, cand2)
            dist += _sq_dist(x_row, g, in_row, n1)
            dist += _sq_dist(x_row, D4 + g, in_row & (D4 + g < D), n2)
            dist += _sq_dist(x_row, 2 * D4 + g, in_row & (2 * D4 + g < D), n3)
            dist += _sq_dist(x_row, 3 * D4 + g, in_row & (3 * D4 + g < D), n4)
        dist = tl.where(c < K, dist, float("inf"))
        tile_dist, tile_best = tl.min(dist, axis=0, return_indices=True)
        # Strictly lower only: a tie keeps the earlier tile's candidate, the lowest index,
        # as argmin over all k at once would.
        take = tile_dist < best_dist
        best = tl.where(take, c0 + tile_best, best)
        best_dist = tl.where(take, tile_dist, best_dist)
    tl.store(index_ptr + i, best.to(tl.int64))
    # Regenerate the winner from its counter instead of having kept any candidate.
    win = (i * K + best).to(tl.uint32)
    out_row = out_ptr + i * D
    for g0 in range(0, D4, BLOCK):
        g = g0 + tl.arange(0, BLOCK)
        in_row = g < D4
        n1, n2, n3, n4 = _normals4(seed, g.to(tl.uint32), tl.full((BLOCK,), 0, tl.uint32) + win)
        ty: tl.constexpr = out_ptr.dtype.element_ty
        tl.store(out_row + g, _to_out(n1, ty), mask=in_row)
        tl.store(out_row + D4 + g, _to_out(n2, ty), mask=in_row & (D4 + g < D))
        tl.store(out_row + 2 * D4 + g, _to_out(n3, ty), mask=in_row & (2 * D4 + g < D))
        tl.store(out_row + 3 * D4 + g, _to_out(n4, ty), mask=in_row & (3 * D4 + g < D))


def _knn_tile(k: int, block: int = 32) -> Tuple[int, int]:
    """(K_TILE, BLOCK) of the fused kernel for k candidates. The [K_TILE, BLOCK] candidate tile
    lives in registers: BLOCK shrinks as K_TILE grows, and K_TILE stops at 512: past it the tile
    no longer shrank and ptxas spilled (k = 4096: 255 registers, 27-29 KB; docs/GPU.md)."""
    k_tile = min(max(2, triton.next_power_of_2(k)), _KNN_MAX_K_TILE)
    return k_tile, max(4, min(block, _KNN_TILE_ELEMENTS // k_tile))


def knn_noise_triton(x: torch.Tensor, k: int, seed, *, block: int = 32,
                     num_warps: int = 4) -> Tuple[torch.Tensor, torch.Tensor]:
    """x [B, ...], seed (int64 [1] tensor or int) -> (noise like x, LongTensor [B]) from the fused
    kernel on x's device (CPU tensors: only under TRITON_INTERPRET=1). Memory O(B*D) whatever
    k. x and k are assumed valid (the operator checks them)."""
    b = x.shape[0]
    flat = x.detach().reshape(b, -1).contiguous()
    dim = flat.shape[1]
    out = torch.empty_like(flat)
    index = torch.empty(b, dtype=torch.long, device=x.device)
    if b == 0 or dim == 0:
        index.zero_()
        return out.reshape(x.shape), index
    if isinstance(seed, torch.Tensor):
        seed_t = seed.reshape(1).to(x.device)
    else:
        seed_t = torch.tensor([_checks.seed_value(seed)], dtype=torch.int64, device=x.device)
    k_tile, block = _knn_tile(k, block)
    # maxnreg: without a stated ceiling ptxas holds the kernel at 168 registers on sm_80 (32 for
    # k < 8) and spills 4-92 bytes; given 255 it takes 76-226 and spills none (docs/GPU.md).
    _knn_noise_kernel[(b,)](flat, out, index, seed_t, dim, -(-dim // 4), k,
                            K_TILE=k_tile, BLOCK=block, num_warps=num_warps, maxnreg=255)
    return out.reshape(x.shape), index


def _knn_noise_cuda(x, k, seed):
    _checks.check_knn(x, k)
    _checks.check_seed_tensor(seed)
    # Triton launches on the current device: for x on cuda:1 while cuda:0 is current, the kernel
    # would run in cuda:0's context on cuda:1's memory.
    with torch.cuda.device(x.device):
        return knn_noise_triton(x, k, seed)


# Not as a decorator: torch.library.impl's decorator returns None, and tests call the function.
torch.library.impl("immiscible::knn_noise", "CUDA")(_knn_noise_cuda)
