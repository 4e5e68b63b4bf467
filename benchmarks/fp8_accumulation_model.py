"""How much Hopper's fp8 tensor-core accumulator can move the fp8 distances: a numpy model.

Model (DeepSeek-V3 technical report, sec. 3.3.2: fp8 GEMM on H800 "retains around 14 bits" of
accumulation): each fp8 wgmma instruction adds the exact sum of its K = 32 products to its
accumulator and keeps 14 significant bits of the result, truncated. Two ways of running the K loop:

  whole-K   the accumulator stays in the tensor core for all of D (Triton's default on sm_90:
            max_num_imprecise_acc = 2^30);
  chunked   every `chunk` products go to a fresh partial sum that is added into an fp32
            accumulator (the kernel's max_num_imprecise_acc = FP8_ACC_CHUNK).

The model is not the hardware (its rounding inside one instruction is not documented); it bounds
what the truncation can do. Reported: the share of distances outside the CUDA test's tolerance
(tests/ops/test_triton_distance.py, fp8: rtol 3e-5, atol 3e-5 * max distance) and the largest
relative error against the exact fp32 result of the same rounded inputs.

    python benchmarks/fp8_accumulation_model.py                   # the test's 129x130, D=4096
    python benchmarks/fp8_accumulation_model.py --n 1024 --m 1024 --seeds 3
"""

import argparse

import numpy as np
import torch

from immiscible_ops import reference
from immiscible_ops.triton_distance import FP8_ACC_CHUNK

INSTRUCTION_K = 32  # K of one fp8 wgmma


def truncate(v: np.ndarray, bits: int) -> np.ndarray:
    """v (float32) with `bits` significant bits, the rest cut (toward zero)."""
    raw = v.astype(np.float32).view(np.uint32)
    return (raw & np.uint32(~((1 << (24 - bits)) - 1) & 0xFFFFFFFF)).view(np.float32)


def model_dot(qx: np.ndarray, qy: np.ndarray, chunk, bits: int) -> np.ndarray:
    """qx [N, D], qy [M, D] (e4m3 values) -> [N, M] dot products as the modelled kernel sums them;
    chunk None: whole-K accumulation in the tensor core."""
    d = qx.shape[1]
    total = np.zeros((qx.shape[0], qy.shape[0]), dtype=np.float32)
    acc = np.zeros_like(total)
    for k in range(0, d, INSTRUCTION_K):
        # e4m3 products and their sum over 32 are exact in float64
        a = qx[:, k:k + INSTRUCTION_K].astype(np.float64)
        b = qy[:, k:k + INSTRUCTION_K].astype(np.float64)
        part = a @ b.T
        acc = truncate(acc + part.astype(np.float32), bits)
        if chunk is not None and (k + INSTRUCTION_K) % chunk == 0:
            total += acc
            acc = np.zeros_like(acc)
    return total + acc


def run(n, m, d, seed, bits):
    g = torch.Generator().manual_seed(seed)
    x, y = 0.5 * torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    sx, sy = reference.fp8_row_scale(x), reference.fp8_row_scale(y)
    qx = (x / sx).to(reference.FP8_DTYPE).float().numpy()
    qy = (y / sy).to(reference.FP8_DTYPE).float().numpy()
    want = reference.pairwise_distance(x, y, "sqeuclidean", "fp8").double().numpy()
    xq, yq = reference.quantize(x, "fp8").double(), reference.quantize(y, "fp8").double()
    nx, ny = (xq.square().sum(-1)).numpy(), (yq.square().sum(-1)).numpy()
    scale = (sx.double() @ sy.double().T).numpy()
    atol = 3e-5 * np.abs(want).max()
    rows = {}
    for name, chunk in (("whole-K", None), (f"chunk {FP8_ACC_CHUNK}", FP8_ACC_CHUNK)):
        dot = model_dot(qx, qy, chunk, bits).astype(np.float64) * scale
        got = np.maximum(nx[:, None] + ny[None, :] - 2.0 * dot, 0.0)
        outside = np.abs(got - want) > atol + 3e-5 * np.abs(want)
        rows[name] = (outside.mean(), (np.abs(got - want) / np.abs(want)).max())
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=129)
    p.add_argument("--m", type=int, default=130)
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--bits", type=int, default=14, help="significant bits the accumulator keeps")
    args = p.parse_args()
    print(f"N={args.n} M={args.m} D={args.d} accumulator {args.bits} bits, sqeuclidean, "
          f"x = 0.5 N(0,1), y = N(0,1); {args.seeds} seeds")
    print("| accumulation | outside the test's tolerance | max relative error |")
    print("|---|---:|---:|")
    results = [run(args.n, args.m, args.d, s, args.bits) for s in range(args.seeds)]
    for name in results[0]:
        share = np.mean([r[name][0] for r in results])
        worst = max(r[name][1] for r in results)
        print(f"| {name} | {100 * share:.1f} % | {worst:.1e} |")


if __name__ == "__main__":
    main()
