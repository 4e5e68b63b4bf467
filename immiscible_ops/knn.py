"""KNN noise: for each image draw k candidate Gaussian noises and keep the nearest (L2).

The published version materializes [B, k, D] candidates and takes an argmin (memory and traffic
O(B*k*D)). The fused Triton kernel here never stores a candidate: each element is generated from a
counter-based RNG (Philox4x32-10, the one behind `tl.randn4x`), distances are accumulated on the
fly, and only the winner is regenerated from its counter and written: memory O(B*D) whatever k.

Counter layout, shared by the kernel and the CPU reference (so any noise can be regenerated):
    key       = (seed & 0xffffffff, seed >> 32)           seed: int64 in [0, 2^63)
    counter   = (g, i * k + c, 0, 0)                       image i, candidate c, group g < ceil(D/4)
    Philox4x32-10(counter, key) -> 4 uint32 -> 4 normals (Triton's Box-Muller, two pairs)
    normal j of group g is element j * ceil(D/4) + g of the flattened candidate.

The CPU reference (`knn_noise_reference`) reproduces Triton's arithmetic in numpy float32 and
is bit-identical to the kernel under TRITON_INTERPRET=1 (the interpreter evaluates log/cos/sin with
the same numpy functions). On a GPU the integer stream is identical, but log/sqrt/cos/sin are the
device's own approximations, so normals can differ from the reference in the last ulps.
Distances are accumulated in float64 (x and the noise are float32-exact there, squares are
exact), so the argmin does not depend on the summation order of either implementation.

Candidates drawn by the caller (`select_nearest`), and the CPU path of
`immiscible_noise(method="knn")` (`knn_noise_randn`: candidates from torch.randn), use the plain
torch recipe of kohya-ss and OneTrainer instead: distances are torch.linalg.vector_norm of the
flattened difference in a stated dtype, bit for bit what that recipe computes on the same
candidates. Philox in numpy costs ~150 ms for B*k*D = 4M normals on the reference machine, three
times all of the recipe's work, so the CPU default draws with torch's own generator.
"""

from typing import Optional, Tuple, Union

import numpy as np
import torch

from immiscible_ops._checks import (
    SEED_HIGH,
    check_candidates,
    check_knn,
    check_seed,
    check_seed_tensor,
    missing_dependency,
)

try:
    import triton
    import triton.language as tl
    from triton.language.random import pair_uniform_to_normal, uint_to_uniform_float

    HAS_TRITON = True
except ImportError:  # the CPU reference needs no Triton
    HAS_TRITON = False

_PHILOX_KEY_A = np.uint32(0x9E3779B9)
_PHILOX_KEY_B = np.uint32(0xBB67AE85)
_PHILOX_ROUND_A = np.uint64(0xD2511F53)
_PHILOX_ROUND_B = np.uint64(0xCD9E8D57)
_REF_CHUNK = 1 << 22  # candidate elements per reference chunk (~16 MB float32) bounds CPU memory
_KNN_TILE_ELEMENTS = 2048  # [K_TILE, BLOCK] elements of the kernel's register tile
_KNN_MAX_K_TILE = 512


# ---------------------------------------------------------------------------------------------
# Seeds and validation


def draw_seed(generator: Optional[torch.Generator] = None,
              device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """int64 [1] Philox seed in [0, 2^63) drawn from `generator` (or the default one), on `device`.

    Stays on the device so that the CUDA path never synchronizes with the host."""
    gen_device = generator.device if generator is not None else torch.device(device)
    seed = torch.randint(0, SEED_HIGH, (1,), generator=generator, device=gen_device,
                         dtype=torch.int64)
    return seed.to(device, non_blocking=True)


def _seed_int(seed) -> int:
    value = int(seed.reshape(-1)[0].item()) if isinstance(seed, torch.Tensor) else int(seed)
    check_seed(value)
    return value


def _seed_tensor(seed, device) -> torch.Tensor:
    if isinstance(seed, torch.Tensor):
        check_seed_tensor(seed)
        return seed.reshape(1).to(device)
    return torch.tensor([_seed_int(seed)], dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------------------------
# CPU reference: Triton's Philox4x32 and normal transform in numpy


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
        s = _seed_int(seed)
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


# ---------------------------------------------------------------------------------------------
# Candidates as tensors (the caller's, or torch.randn's): the plain torch recipe


def select_nearest(x: torch.Tensor, candidates: torch.Tensor, *,
                   distance_dtype: Optional[torch.dtype] = None, return_index: bool = False):
    """x [B, ...], candidates [B, k, ...] -> noise like x (x's shape and dtype): per image i the
    candidate j minimizing torch.linalg.vector_norm(c[i, j].flatten().to(dt) - x[i].flatten().to(dt)),
    dt = distance_dtype or torch.promote_types(x.dtype, candidates.dtype); ties (frequent in
    fp16/bf16, whose norms round coarsely) go to the lowest j, as torch.argmin; k = 1 takes the
    only candidate. With return_index also the LongTensor [B] of chosen j."""
    check_candidates(x, candidates, distance_dtype)
    b, k = candidates.shape[:2]
    if k == 1 or b == 0:
        index = torch.zeros(b, dtype=torch.long, device=x.device)
    else:
        dt = distance_dtype or torch.promote_types(x.dtype, candidates.dtype)
        # One call over [B, k, D], as the recipe makes it: torch's fp16 norm takes its generic
        # reduction, whose order could depend on the shape it is given.
        diff = x.detach().flatten(1).to(dt).unsqueeze(1) - candidates.detach().flatten(2).to(dt)
        index = torch.linalg.vector_norm(diff, dim=2).argmin(1)
    noise = candidates[torch.arange(b, device=x.device), index].to(x.dtype)
    return (noise, index) if return_index else noise


def knn_noise_randn(x: torch.Tensor, k: int, *, generator: Optional[torch.Generator] = None,
                    distance_dtype: Optional[torch.dtype] = None, return_index: bool = False):
    """x [B, ...] -> noise like x from candidates torch.randn((B, k, *x.shape[1:]), generator,
    x's device and dtype): the draws kohya-ss's and OneTrainer's recipe makes, then
    select_nearest. Memory O(B k D), as that recipe."""
    check_knn(x, k)
    candidates = torch.randn((x.shape[0], k, *x.shape[1:]), generator=generator, device=x.device,
                             dtype=x.dtype)
    return select_nearest(x, candidates, distance_dtype=distance_dtype, return_index=return_index)


# ---------------------------------------------------------------------------------------------
# Fused Triton kernel

if HAS_TRITON:

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
    """x [B, ...] -> (noise like x, LongTensor [B]) from the fused kernel (CUDA, or CPU tensors
    under TRITON_INTERPRET=1). Memory O(B*D) whatever k."""
    if not HAS_TRITON:
        raise missing_dependency("knn_noise_triton runs a Triton kernel", "pip install triton")
    check_knn(x, k)
    b = x.shape[0]
    flat = x.detach().reshape(b, -1).contiguous()
    dim = flat.shape[1]
    out = torch.empty_like(flat)
    index = torch.empty(b, dtype=torch.long, device=x.device)
    if b == 0 or dim == 0:
        index.zero_()
        return out.reshape(x.shape), index
    seed_t = _seed_tensor(seed, x.device)
    k_tile, block = _knn_tile(k, block)
    # maxnreg: without a stated ceiling ptxas holds the kernel at 168 registers on sm_80 (32 for
    # k < 8) and spills 4-92 bytes; given 255 it takes 76-226 and spills none (docs/GPU.md).
    _knn_noise_kernel[(b,)](flat, out, index, seed_t, dim, -(-dim // 4), k,
                            K_TILE=k_tile, BLOCK=block, num_warps=num_warps, maxnreg=255)
    return out.reshape(x.shape), index


# ---------------------------------------------------------------------------------------------
# Public entry points


def knn_noise(x: torch.Tensor, k: int, *, generator: Optional[torch.Generator] = None,
              seed=None, return_index: bool = False):
    """x [B, ...] -> noise like x: per image the nearest (L2) of k standard-normal candidates
    (and the LongTensor [B] of chosen candidates if return_index). Seed from `seed` or `generator`."""
    check_knn(x, k)
    if seed is None:
        seed = draw_seed(generator, x.device)
    if x.is_cuda and HAS_TRITON:
        noise, index = knn_noise_triton(x, k, seed)
    else:
        noise, index = knn_noise_reference(x, k, seed)
    return (noise, index) if return_index else noise


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
