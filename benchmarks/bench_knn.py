"""KNN noise: fused kernel (never stores a candidate) vs the materializing [B, k, D] version.

    python benchmarks/bench_knn.py                      # B=1024 k=64 D=4096, on CUDA if present
    python benchmarks/bench_knn.py --quick              # small CPU smoke run (numpy reference)
    TRITON_INTERPRET=1 python benchmarks/bench_knn.py --quick --interpret   # the kernel itself on CPU
    python benchmarks/bench_knn.py --recipe             # CPU: immiscible_noise(knn) vs the plain torch
                                                        # recipe (kohya-ss / OneTrainer), bf16 [8,16,64,64], k=8

Same seeded input for every contender, measured side by side, median of repeats; on CUDA with
events after warm-up, plus each contender's peak memory. Goal on one H100 at the default size:
fused <= 0.3 ms and >= 5x faster than materialized.
"""

import argparse
import statistics

import torch

from immiscible_ops import immiscible_noise, knn, reference
from immiscible_ops.bench import time_ms


def recipe_row(args):
    """The CPU path of immiscible_noise(method="knn") against the plain torch recipe at the
    recipe users' sizes: the same draws (torch.randn in x's dtype), the same selection."""
    shape = tuple(args.shape)
    dtype = getattr(torch, args.dtype)
    b, k = shape[0], args.k
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)

    def recipe_select(c):
        d = torch.linalg.vector_norm((c - x.unsqueeze(1)).flatten(2), dim=2)
        return c[torch.arange(b), d.argmin(1)]

    def draw(seed):
        return torch.randn((b, k, *shape[1:]), generator=torch.Generator().manual_seed(seed), dtype=dtype)

    cand = draw(3)
    assert torch.equal(immiscible_noise(x, method="knn", candidates=cand), recipe_select(cand))
    assert torch.equal(immiscible_noise(x, method="knn", k=k, generator=torch.Generator().manual_seed(3)),
                       recipe_select(cand))
    seed = knn.draw_seed(torch.Generator().manual_seed(1))
    contenders = [
        ("torch recipe: randn + norm + argmin", lambda: recipe_select(draw(3))),
        ("immiscible_noise(knn), CPU path", lambda: immiscible_noise(
            x, method="knn", k=k, generator=torch.Generator().manual_seed(3))),
        ("Philox reference (the CPU path before)", lambda: reference.knn_noise_reference(x, k, seed)),
        ("recipe selection only (given c)", lambda: recipe_select(cand)),
        ("immiscible_noise(candidates=c)", lambda: immiscible_noise(x, method="knn", candidates=cand)),
    ]
    print(f"cpu threads={torch.get_num_threads()} x={list(shape)} k={k} dtype={args.dtype} "
          f"repeats={args.repeats} (median ms; same draws, results checked equal)")
    times = {}
    # Interleaved rounds: a shared machine's load drifts, and drifts alike for every contender.
    samples = {name: [] for name, _ in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders:
            samples[name] += time_ms(fn, 1, 1 if not samples[name] else 0)
    for name, _ in contenders:
        times[name] = statistics.median(samples[name])
        print(f"  {name:40s} {times[name]:9.1f} ms")
    base = times["torch recipe: randn + norm + argmin"]
    print(f"  immiscible_noise(knn) / recipe: {times['immiscible_noise(knn), CPU path'] / base:.2f}; "
          f"Philox reference / recipe: {times['Philox reference (the CPU path before)'] / base:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (CPU smoke test)")
    p.add_argument("--interpret", action="store_true",
                   help="time the Triton kernel on CPU tensors (needs TRITON_INTERPRET=1)")
    p.add_argument("--recipe", action="store_true",
                   help="CPU row: immiscible_noise(knn) vs the plain torch recipe (--shape, --k, --dtype)")
    p.add_argument("--shape", type=int, nargs="+", default=[8, 16, 64, 64], help="x's shape for --recipe")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recipe:
        if args.k == 64 and args.dtype == "float32":  # the fused row's defaults: use the recipe's
            args.k, args.dtype = 8, "bfloat16"
        return recipe_row(args)
    if args.quick:
        args.batch, args.k, args.dim, args.repeats, args.warmup = 16, 8, 300, 3, 1

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    x = torch.randn((args.batch, args.dim), generator=torch.Generator().manual_seed(0)).to(device, dtype)
    seed = knn.draw_seed(torch.Generator().manual_seed(1), device)
    fused_name = "fused_triton" if device.type == "cuda" or args.interpret else "fused_reference_cpu"

    def fused():
        if device.type == "cuda":  # the operator, as users call it: the Triton kernel on CUDA
            return torch.ops.immiscible.knn_noise(x, args.k, seed)
        if args.interpret:
            from immiscible_ops import triton_knn
            return triton_knn.knn_noise_triton(x, args.k, seed)
        return reference.knn_noise_reference(x, args.k, seed)

    gen = torch.Generator(device=device).manual_seed(2)

    def materialized():
        return reference.knn_noise_materialized(x, args.k, generator=gen)

    print(f"device={torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} "
          f"B={args.batch} k={args.k} D={args.dim} dtype={args.dtype} repeats={args.repeats}")
    results = {}
    for name, fn in ((fused_name, fused), ("materialized", materialized)):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        ms = statistics.median(time_ms(fn, args.repeats, args.warmup, device))
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else float("nan")
        results[name] = ms
        print(f"  {name:22s} {ms:10.3f} ms   peak extra memory {peak:9.1f} MiB")
    print(f"  speedup materialized / fused: {results['materialized'] / results[fused_name]:.2f}x")


if __name__ == "__main__":
    main()
