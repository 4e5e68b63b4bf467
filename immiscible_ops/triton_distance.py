"""Triton kernels behind immiscible::pairwise_distance on CUDA (see docs/DISTANCE.md).

Two launches per call:
  1. `_prepare_rows`: one pass over each row of x and of y that rounds it to the requested
     precision (fp8: row amax -> scale = amax / 448 -> e4m3), writes the rounded copy when the
     dot needs one, and the fp32 sum of squares of the rounded values (the row norms).
  2. `_sqdist_kernel` (l2, sqeuclidean): |x|^2 + |y|^2 - 2 x.y, the dot on tensor cores with
     tl.dot on block tiles, grouped tile order, autotuned; or `_l1_kernel` on CUDA cores.

With TRITON_INTERPRET=1 set before triton is imported, CPU tensors run the same kernels through
the Triton interpreter with one small fixed config (no autotuning), so tests need no GPU.
Importing this module makes no CUDA call.
"""

import contextlib
import math

import torch
import triton
import triton.language as tl
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction

from immiscible_ops import _checks
from immiscible_ops.reference import FP8_MAX

_FP8_MAX = tl.constexpr(FP8_MAX)  # kernels may read only constexpr globals
# Products per fp8 partial sum before it is added into the fp32 accumulator (the K of one fp8
# wgmma instruction is 32). Asserted from the compiled IR by .ci/gpu_compile_check.py.
FP8_ACC_CHUNK = 32
_FP8_ACC_CHUNK = tl.constexpr(FP8_ACC_CHUNK)

# Rounding modes of _prepare_rows.
_Q_NONE, _Q_FP16, _Q_BF16, _Q_FP8 = 0, 1, 2, 3
_QUANT = {"fp32": _Q_NONE, "fp16": _Q_FP16, "bf16": _Q_BF16, "fp8": _Q_FP8}
_STORAGE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}
# Row length (elements) the tensor-core kernel needs for vectorized, cp.async-able K tiles: Triton
# proves 16-byte alignment of a row only from an integer divisible by 16.
_K_ALIGN = 16
# CUDA's limit on grid dimension y (the batch axis of the distance kernels).
MAX_GRID_Y = 65535


# ---------------------------------------------------------------------------------------------
# Kernels (plain functions, turned into JIT or interpreted kernels below)


def _prepare_rows(src, dst, scale_out, norm_out, D, D_OUT, stride_r, stride_d,
                  BLOCK_D: tl.constexpr, QUANT: tl.constexpr, WRITE: tl.constexpr):
    # src [R, D] (any strides) -> dst [R, D_OUT] contiguous rounded copy (if WRITE; columns
    # D..D_OUT-1 zero), norm_out [R] fp32 sum of squares of the rounded values, scale_out [R]
    # (fp8 only). Element offsets are int64: a transposed input has stride_d = R, and
    # D * R >= 2^31 would wrap in int32.
    row = tl.program_id(0).to(tl.int64)
    src_row = src + row * stride_r
    offs = tl.arange(0, BLOCK_D)
    scale = 1.0
    if QUANT == 3:
        amax = tl.zeros([BLOCK_D], dtype=tl.float32)
        for k in range(0, D, BLOCK_D):
            v = tl.load(src_row + (k + offs).to(tl.int64) * stride_d, mask=k + offs < D, other=0.0)
            amax = tl.maximum(amax, tl.abs(v.to(tl.float32)))
        row_max = tl.max(amax, axis=0)
        # div_rn, not '/': Triton's fp32 division is approximate and the scale must equal
        # reference.fp8_row_scale bit for bit.
        scale = tl.where(row_max > 0, tl.math.div_rn(row_max, _FP8_MAX), 1.0)
        tl.store(scale_out + row, scale)
    sumsq = tl.zeros([BLOCK_D], dtype=tl.float32)
    for k in range(0, D_OUT, BLOCK_D):
        mask = k + offs < D
        v = tl.load(src_row + (k + offs).to(tl.int64) * stride_d, mask=mask, other=0.0)
        v = v.to(tl.float32)
        # Rounding is done on the fp32 bit pattern (round to nearest even, as torch casts) so the
        # final cast is exact: the Triton interpreter truncates bf16 casts and drops the exponent
        # carry of fp8 casts, which would make the CPU tests check a different rounding.
        if QUANT == 1:
            q = v.to(tl.float16).to(tl.float32)
        elif QUANT == 2:
            bits = v.to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            q = tl.where(v != v, v, bits.to(tl.float32, bitcast=True))
        elif QUANT == 3:
            a = tl.abs(tl.math.div_rn(v, scale))
            bits = a.to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20) << 20  # keep 3 mantissa bits
            normal = tl.minimum(bits.to(tl.float32, bitcast=True), _FP8_MAX)
            # Below 2^-6 e4m3 is subnormal with a fixed step of 2^-9.
            s = a * 512.0
            f = tl.floor(s)
            r = s - f
            up = (r > 0.5) | ((r == 0.5) & ((f.to(tl.int32) & 1) == 1))
            sub = (f + up.to(tl.float32)) * (1.0 / 512.0)
            qa = tl.where(a < 0.015625, sub, normal)
            q = tl.where(v < 0, -qa, qa)
        else:
            q = v
        if WRITE:
            # Masked loads gave 0 beyond D, and 0 rounds to 0: the padding is written as zeros.
            tl.store(dst + row * D_OUT + k + offs, q.to(dst.dtype.element_ty), mask=k + offs < D_OUT)
        if QUANT == 3:
            q = q * scale
        sumsq += q * q
    tl.store(norm_out + row, tl.sum(sumsq, axis=0))


@triton.jit
def _tile_offsets(N, M, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Row and column offsets of this program's output tile. Grouped order: GROUP_M row blocks
    sweep the column blocks together, so the y tiles they share are still in L2 (the tile order
    of Triton's matmul tutorial)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(N, BLOCK_M)
    num_n = tl.cdiv(M, BLOCK_N)
    group_size = GROUP_M * num_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows_in_group
    pid_n = (pid % group_size) // rows_in_group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Wrap out-of-range rows onto valid ones instead of masking: loads stay unmasked along
    # rows, the extra results are dropped by the store mask.
    return offs_m, offs_n, (offs_m % N).to(tl.int64), (offs_n % M).to(tl.int64)


@triton.jit
def _row_tile_ptrs(base, batch, stride_b, rows, stride_r, offs_k, stride_k):
    """Pointers [rows, BLOCK_K] to the first K-slice of the given rows of batch `batch` (int64
    offsets throughout: rows and batch are int64, and so is the K offset, for transposed inputs
    whose stride_k times D passes 2^31)."""
    return (base + batch * stride_b + rows[:, None] * stride_r
            + offs_k[None, :].to(tl.int64) * stride_k)


def _sqdist_kernel(x, y, nx, ny, sx, sy, out, N, M, D,
                   sxb, sxn, sxd, syb, sym, syd, snxb, snyb, sob, son, som,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr,
                   SCALED: tl.constexpr, SQRT: tl.constexpr, EVEN_K: tl.constexpr):
    # x [P, N, D], y [P, M, D], nx/sx [P, N], ny/sy [P, M] (batch stride may be 0) -> out [P, N, M]
    batch = tl.program_id(1).to(tl.int64)
    offs_m, offs_n, rows_m, rows_n = _tile_offsets(N, M, BLOCK_M, BLOCK_N, GROUP_M)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = _row_tile_ptrs(x, batch, sxb, rows_m, sxn, offs_k, sxd)
    y_ptrs = _row_tile_ptrs(y, batch, syb, rows_n, sym, offs_k, syd)

    step_x = tl.full([], BLOCK_K, tl.int64) * sxd
    step_y = tl.full([], BLOCK_K, tl.int64) * syd
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, tl.cdiv(D, BLOCK_K)):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(y_ptrs)
        else:
            k_mask = offs_k[None, :] < D - k * BLOCK_K
            a = tl.load(x_ptrs, mask=k_mask, other=0.0)
            b = tl.load(y_ptrs, mask=k_mask, other=0.0)
        # Both operands K-major ([rows, K]), the layout fp8 wgmma requires.
        if IEEE:
            acc = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), acc, input_precision="ieee")
        elif DOT_DTYPE == tl.float8e4nv:
            # Hopper's fp8 wgmma keeps its running sum in a truncating accumulator of about 14
            # significant bits; left to its default (2^30 on sm_90) Triton keeps it there over the
            # whole K loop, and at D = 4096 the truncation drifts the dot by percents
            # (benchmarks/fp8_accumulation_model.py). A partial sum of at most FP8_ACC_CHUNK
            # products per wgmma chain, added into the fp32 accumulator, bounds the drift.
            acc = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), acc,
                         max_num_imprecise_acc=_FP8_ACC_CHUNK)
        else:
            acc = tl.dot(a.to(DOT_DTYPE), tl.trans(b.to(DOT_DTYPE)), acc)
        x_ptrs += step_x
        y_ptrs += step_y

    if SCALED:
        acc = acc * tl.load(sx + batch * snxb + rows_m)[:, None]
        acc = acc * tl.load(sy + batch * snyb + rows_n)[None, :]
    norm_x = tl.load(nx + batch * snxb + rows_m)
    norm_y = tl.load(ny + batch * snyb + rows_n)
    sq = norm_x[:, None] + norm_y[None, :] - 2.0 * acc
    sq = tl.maximum(sq, 0.0)
    if SQRT:
        sq = tl.sqrt_rn(sq)
    out_ptrs = (out + batch * sob + offs_m[:, None].to(tl.int64) * son
                + offs_n[None, :].to(tl.int64) * som)
    tl.store(out_ptrs, sq, mask=(offs_m[:, None] < N) & (offs_n[None, :] < M))


def _l1_kernel(x, y, sx, sy, out, N, M, D,
               sxb, sxn, sxd, syb, sym, syd, snxb, snyb, sob, son, som,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
               GROUP_M: tl.constexpr, SCALED: tl.constexpr):
    # Same layout as _sqdist_kernel; sum_k |x_ik - y_jk| has no matmul form, so CUDA cores.
    batch = tl.program_id(1).to(tl.int64)
    offs_m, offs_n, rows_m, rows_n = _tile_offsets(N, M, BLOCK_M, BLOCK_N, GROUP_M)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = _row_tile_ptrs(x, batch, sxb, rows_m, sxn, offs_k, sxd)
    y_ptrs = _row_tile_ptrs(y, batch, syb, rows_n, sym, offs_k, syd)
    if SCALED:
        scale_x = tl.load(sx + batch * snxb + rows_m)[:, None]
        scale_y = tl.load(sy + batch * snyb + rows_n)[:, None]
    step_x = tl.full([], BLOCK_K, tl.int64) * sxd
    step_y = tl.full([], BLOCK_K, tl.int64) * syd

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k in range(0, tl.cdiv(D, BLOCK_K)):
        # Padding with 0 on both sides adds |0 - 0| = 0.
        k_mask = offs_k[None, :] < D - k * BLOCK_K
        a = tl.load(x_ptrs, mask=k_mask, other=0.0).to(tl.float32)
        b = tl.load(y_ptrs, mask=k_mask, other=0.0).to(tl.float32)
        if SCALED:  # fp8: |sx qx - sy qy| does not factor, dequantize first
            a = a * scale_x
            b = b * scale_y
        acc += tl.sum(tl.abs(a[:, None, :] - b[None, :, :]), axis=2)
        x_ptrs += step_x
        y_ptrs += step_y

    out_ptrs = (out + batch * sob + offs_m[:, None].to(tl.int64) * son
                + offs_n[None, :].to(tl.int64) * som)
    tl.store(out_ptrs, acc, mask=(offs_m[:, None] < N) & (offs_n[None, :] < M))


# ---------------------------------------------------------------------------------------------
# Configs. Tensor-core tiles: 128x128..128x256 with BLOCK_K 64 (fp16/bf16) or 128 (fp8, so a
# tile row is 128 bytes either way) keep the SM's tensor cores fed from a 3-4 stage shared
# memory pipeline; (128 + 256) * 64 * 2 B * 3 stages = 144 KiB fits the H100's 227 KiB.


def _cfg(bm, bn, bk, stages, warps, group=8, maxnreg=None):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
                         num_stages=stages, num_warps=warps, maxnreg=maxnreg)


_TC_CONFIGS = [
    _cfg(128, 256, 64, 3, 8),
    _cfg(256, 128, 64, 3, 8),
    _cfg(128, 128, 64, 4, 8),
    _cfg(128, 128, 64, 4, 4),
    _cfg(128, 256, 128, 3, 8),
    _cfg(128, 128, 128, 4, 8),
    _cfg(64, 128, 64, 4, 4),
    _cfg(64, 64, 64, 4, 4),
]
# fp32 "ieee" runs on FMA units with 4-byte operands: smaller tiles, BLOCK_K 32.
_IEEE_CONFIGS = [
    _cfg(128, 128, 32, 3, 8),
    _cfg(128, 64, 32, 3, 4),
    _cfg(64, 64, 32, 3, 4),
    # ptxas left to itself stops this one at 96 registers and spills 20 bytes on sm_90; with a
    # stated ceiling it takes the same 96 and no spill (docs/GPU.md "Resources").
    _cfg(64, 32, 32, 4, 4, maxnreg=128),
]
# l1 materializes a [BLOCK_M, BLOCK_N, BLOCK_K] difference in registers: keep it ~8K elements.
_L1_CONFIGS = [
    _cfg(64, 64, 4, 3, 8),
    _cfg(32, 64, 8, 3, 4),
    _cfg(32, 32, 8, 3, 4),
    _cfg(64, 32, 4, 3, 4),
]
_INTERP_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}
_INTERP_L1_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 4}


def _prune(configs, named_args, **kwargs):
    # Tiles far larger than the problem only waste autotuning time.
    n, m = named_args["N"], named_args["M"]
    fit = [c for c in configs
           if c.kwargs["BLOCK_M"] <= max(64, triton.next_power_of_2(n))
           and c.kwargs["BLOCK_N"] <= max(64, triton.next_power_of_2(m))]
    # BLOCK_K 128 is for 1-byte fp8 operands: with 2-byte ones its pipeline needs 192-288 KB of
    # shared memory, more than any GPU has (227 KB on sm_90), and tuning would only compile it.
    if kwargs.get("DOT_DTYPE") not in (None, tl.float8e4nv):
        fit = [c for c in fit if c.kwargs["BLOCK_K"] < 128]
    # An fp8 tile holds two accumulators (the bounded imprecise partial and the fp32 sum): over
    # 64 fp32 values a thread each, ptxas spilled 228-520 bytes on sm_90 (128x256 on 8 warps,
    # 128x128 on 4).
    if kwargs.get("DOT_DTYPE") == tl.float8e4nv:
        fit = [c for c in fit if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 32 * c.num_warps]
    return fit or configs[-1:]


_KEY = ["N", "M", "D", "DOT_DTYPE"]  # the autotuner also keys on every tensor's dtype
_even_k = triton.heuristics({"EVEN_K": lambda args: args["D"] % args["BLOCK_K"] == 0})
_prepare_jit = triton.jit(_prepare_rows)
_sqdist_jit = triton.jit(_sqdist_kernel)
_l1_jit = triton.jit(_l1_kernel)
_sqdist_tc = triton.autotune(_TC_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune})(
    _even_k(_sqdist_jit))
_sqdist_ieee = triton.autotune(_IEEE_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune})(
    _even_k(_sqdist_jit))
_l1_tuned = triton.autotune(_L1_CONFIGS, key=["N", "M", "D"], prune_configs_by={"early_config_prune": _prune})(
    _l1_jit)

# TRITON_INTERPRET=1 when triton was imported turns every triton.jit function, the ones in
# triton.language included, into an interpreted one that runs on CPU tensors; it cannot be
# switched on later: set after triton's import, it leaves our kernels interpreted but
# triton.language's own helpers (tl.cdiv among them) compiled, and nothing runs.
INTERPRETED = not isinstance(_sqdist_jit, JITFunction) and not isinstance(tl.cdiv, JITFunction)


# ---------------------------------------------------------------------------------------------
# Host side


def _capability(device: torch.device):
    return (0, 0) if device.type != "cuda" else torch.cuda.get_device_capability(device)


def _dot_dtype(precision: str, capability, interpreted: bool):
    """(tl dtype the tiles are multiplied in, torch dtype of the rounded copy)."""
    if precision == "fp32":
        return tl.float32, None
    if precision == "fp16":
        return tl.float16, torch.float16
    cap = (9, 0) if interpreted else tuple(capability)
    if precision == "bf16":
        # The interpreter's bf16 tl.dot returns garbage (it multiplies the raw bits); bf16
        # products are exact in fp32, so an fp32 dot gives the same result.
        if interpreted or cap < (8, 0):
            return tl.float32, torch.bfloat16
        return tl.bfloat16, torch.bfloat16
    # e4m3 values are exact in fp16, so an fp16 dot of the rounded copy (fp32 accumulation)
    # computes the fp8 distance with no loss. fp8 tensor cores only where their accumulation is
    # under control: on sm_90 the kernel bounds the imprecise partial sums (FP8_ACC_CHUNK), on
    # sm_100 tcgen05 accumulates in fp32 tensor memory. Ada (sm_89) and consumer Blackwell
    # (sm_12x) use mma.sync, where Triton has no such control and the accumulator's precision is
    # not documented: fp16 there.
    if cap[0] not in (9, 10):
        return tl.float16, torch.float16
    return tl.float8e4nv, torch.float8_e4m3fn


def _size_bucket(v: int) -> int:
    return triton.next_power_of_2(max(int(v), 1))


# Tuned configs per (kernel, device, size buckets, dtypes). Triton's autotuner keys on the exact
# (N, M, D): every new batch size would benchmark every config again, with host syncs, and inside
# a CUDA-graph capture the benchmark fails outright. Here a kernel is tuned once per
# power-of-two bucket of N, M and D; later shapes in the bucket launch the chosen config directly.
_TUNED: dict = {}


def _tuning_key(kernel, args, kwargs):
    named = dict(zip(kernel.arg_names, args, strict=False))  # constexprs come as kwargs
    dtypes = tuple(str(a.dtype) for a in args if isinstance(a, torch.Tensor))
    device = args[0].device.index if args[0].device.type == "cuda" else -1
    return (kernel.base_fn.__name__, device, _size_bucket(named["N"]), _size_bucket(named["M"]),
            _size_bucket(named["D"]), dtypes, tuple(sorted((k, str(v)) for k, v in kwargs.items())))


def _launch(kernel, grid, args, kwargs):
    if not isinstance(kernel, Autotuner):
        kernel[grid](*args, **kwargs)
        return
    key = _tuning_key(kernel, args, kwargs)
    config = _TUNED.get(key)
    if config is None:
        if not _capturing():
            kernel[grid](*args, **kwargs)
            _TUNED[key] = kernel.best_config
            return
        # No benchmark can run inside a capture: the smallest tile the pruning keeps fits every
        # GPU and every size; tune the bucket before capturing to get the tuned tile in the graph.
        named = dict(zip(kernel.arg_names, args, strict=False))
        config = _prune(kernel.configs, named, **kwargs)[-1]
    kernel.fn[grid](*args, **kwargs, **config.all_kwargs())


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _prepare(t: torch.Tensor, precision: str, storage, need_norms: bool, interpreted: bool,
             pad: bool = False, launch=_launch):
    """t [..., R, D] -> (operand [..., R, D], norms [..., R] or None, scales [..., R] or None).
    With `pad`, a D that is not a multiple of _K_ALIGN gets a copy whose rows are zero-padded to
    the next multiple: the operand is then [..., R, D_pad]; the zeros add nothing to a dot."""
    d = t.shape[-1]
    d_out = -(-d // _K_ALIGN) * _K_ALIGN if pad else d
    if storage is None and d_out != d:
        storage = t.dtype  # fp32: a padded copy at full precision
    write = storage is not None and (precision == "fp8" or t.dtype != storage or d_out != d)
    if not write and not need_norms:
        return t, None, None
    rows = t.reshape(-1, d)
    r = rows.shape[0]
    norms = torch.empty(r, dtype=torch.float32, device=t.device)
    scales = torch.empty(r if precision == "fp8" else 1, dtype=torch.float32, device=t.device)
    dst = torch.empty((r, d_out), dtype=storage, device=t.device) if write else norms
    if r:
        block_d = min(triton.next_power_of_2(max(d_out, 16)), 128 if interpreted else 1024)
        launch(_prepare_jit, (r,),
               (rows, dst, scales, norms, d, d_out, rows.stride(0), rows.stride(1)),
               {"BLOCK_D": block_d, "QUANT": _QUANT[precision], "WRITE": write,
                "num_warps": 4 if d >= 1024 else 1})
    operand = dst.view(*t.shape[:-1], d_out) if write else t
    return operand, norms.view(t.shape[:-1]), (scales.view(t.shape[:-1]) if precision == "fp8" else None)


def _flat(t, batch, p, trailing):
    """t [..., *trailing] with batch dims broadcastable to `batch` -> a [P, *trailing] view (a
    copy only when the broadcast strides cannot be merged into one)."""
    if t is None:
        return None
    shape = t.shape[t.dim() - trailing:]
    return t.expand(*batch, *shape).reshape(p, *shape)


def _distance(x: torch.Tensor, y: torch.Tensor, metric: str, precision: str, capability,
              interpreted: bool, launch=_launch) -> torch.Tensor:
    """x [..., N, D], y [..., M, D] -> float32 [P, N, M]: every kernel goes through
    launch(kernel, grid, args, kwargs), in order. `capability` (major, minor) picks the dot
    dtype. .ci/gpu_compile_check.py passes CPU tensors and a `launch` that compiles for a GPU it
    does not have, so it checks exactly the kernels that would run there."""
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    n, m, d = x.shape[-2], y.shape[-2], x.shape[-1]
    p = math.prod(batch)
    out = torch.empty((p, n, m), dtype=torch.float32, device=x.device)
    if out.numel() == 0:
        return out
    if d == 0:
        return out.zero_()
    # Other floating dtypes (fp64, fp8 inputs) are first rounded to fp32, as the reference does.
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        x = x.float()
    if y.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        y = y.float()

    dot_dtype, storage = _dot_dtype(precision, capability, interpreted)
    l1 = metric == "l1"
    # A row length that is not a multiple of 16 elements defeats Triton's proof of 16-byte
    # aligned rows: the K tiles load element by element, and ptxas spilled up to 19 KB per thread
    # on sm_80 (D = 1000; docs/GPU.md "Resources"). Rows zero-padded to a multiple of 16 do not.
    pad = not l1 and d % _K_ALIGN != 0
    xq, nx, sx = _prepare(x, precision, storage, not l1, interpreted, pad, launch)
    yq, ny, sy = _prepare(y, precision, storage, not l1, interpreted, pad, launch)
    d_k = xq.shape[-1]  # the padded length when padded: its zeros add 0 to every sum
    xq, yq = _flat(xq, batch, p, 2), _flat(yq, batch, p, 2)
    # Norms and scales come out of _prepare with one shape and layout, so one batch stride
    # serves both.
    nx, ny, sx, sy = (_flat(t, batch, p, 1) for t in (nx, ny, sx, sy))
    scaled = sx is not None
    dummy = out  # kernels need a tensor for every pointer, even unused ones
    snxb = nx.stride(0) if nx is not None else 0
    snyb = ny.stride(0) if ny is not None else 0
    strides = (*xq.stride(), *yq.stride(), snxb, snyb, *out.stride())

    def grid_of(problems):
        def grid(meta):
            return (triton.cdiv(n, meta["BLOCK_M"]) * triton.cdiv(m, meta["BLOCK_N"]), problems)
        return grid

    # The batch is grid axis 1, which CUDA caps at 65535 blocks: larger batches go in slices.
    for start in range(0, p, MAX_GRID_Y):
        part = slice(start, min(p, start + MAX_GRID_Y))
        grid = grid_of(part.stop - part.start)
        xs, ys, outs = xq[part], yq[part], out[part]
        sxs, sys_ = (sx[part], sy[part]) if scaled else (dummy, dummy)
        if l1:
            args = (xs, ys, sxs, sys_, outs, n, m, d_k, *strides)
            if interpreted:
                launch(_l1_jit, grid(_INTERP_L1_CONFIG), args,
                       {**_INTERP_L1_CONFIG, "SCALED": scaled})
            else:
                launch(_l1_tuned, grid, args, {"SCALED": scaled})
        else:
            args = (xs, ys, nx[part], ny[part], sxs, sys_, outs, n, m, d_k, *strides)
            flags = {"DOT_DTYPE": dot_dtype, "IEEE": dot_dtype == tl.float32, "SCALED": scaled,
                     "SQRT": metric == "l2"}
            if interpreted:
                cfg = _INTERP_CONFIG
                launch(_sqdist_jit, grid(cfg), args,
                       {**cfg, **flags, "EVEN_K": d_k % cfg["BLOCK_K"] == 0})
            else:
                launch(_sqdist_ieee if flags["IEEE"] else _sqdist_tc, grid, args, flags)
    return out


def triton_pairwise_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "l2",
                             precision: str = "fp32") -> torch.Tensor:
    """x [..., N, D], y [..., M, D] -> float32 [..., N, M] with the Triton kernels on x's device
    (CPU tensors: the Triton interpreter). Inputs are assumed valid (see _checks.check_pair)."""
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    n, m = x.shape[-2], y.shape[-2]
    interpreted = INTERPRETED
    if x.device.type == "cpu" and not interpreted:
        raise RuntimeError(
            "triton_pairwise_distance: CPU tensors need the Triton interpreter; set "
            "TRITON_INTERPRET=1 before triton is first imported"
        )
    capability = (9, 0) if interpreted else _capability(x.device)
    with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
        out = _distance(x, y, metric, precision, capability, interpreted)
    return out.view(*batch, n, m)


def _pairwise_distance_cuda(x, y, metric="l2", precision="fp32"):
    _checks.check_pair(x, y, metric, precision)
    return triton_pairwise_distance(x, y, metric, precision)


# Not as a decorator: torch.library.impl's decorator returns None, and tests call the function.
torch.library.impl("immiscible::pairwise_distance", "CUDA")(_pairwise_distance_cuda)
