"""GPU benchmarks of immiscible_ops, every contender on the same seeded workload in one run.

    python benchmarks/bench_gpu.py                       # full sizes, CUDA
    python benchmarks/bench_gpu.py --device cpu --quick  # smoke test with tiny sizes

CUDA timings: CUDA events around each call after warm-up, median of --repeats. CPU timings
(quick smoke mode, or host-side contenders): perf_counter, same median. Prints a markdown table
and writes it with the raw numbers to --json / --markdown when given.
"""

import argparse
import json
import platform
import statistics
import sys
from datetime import datetime, timezone

import torch

import immiscible_ops
from immiscible_ops.bench import time_ms


def workload(b: int, d: int, device, seed: int):
    """The Immiscible Diffusion batch: images x = 0.5*N(0,1), noise N(0,1), flattened."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (0.5 * torch.randn(b, d, generator=g)).to(device)
    noise = torch.randn(b, d, generator=g).to(device)
    return x, noise


def excess(cost: torch.Tensor, assignment: torch.Tensor) -> float:
    """Relative excess of an assignment's total over scipy's optimum (nan without scipy)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        return float("nan")
    c = cost.double().cpu().numpy()
    rows, cols = linear_sum_assignment(c)
    best = c[rows, cols].sum()
    got = c[range(c.shape[0]), assignment.cpu().numpy()].sum()
    return float((got - best) / abs(best))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-scipy", action="store_true", help="skip the host recipe")
    parser.add_argument("--check", action="store_true", help="report excess over scipy's optimum")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu --quick", file=sys.stderr)
        return 2
    quick = args.quick
    repeats = args.repeats or (3 if quick else 20)
    d = 64 if quick else 4096
    sizes = [32, 64] if quick else [1024, 4096, 16384]
    small = (8, 16) if quick else (256, 256)  # (problems, n)
    recipe_b = 64 if quick else 4096
    dist_nmd = (128, 128, 256) if quick else (8192, 8192, 16384)
    rows = []

    def record(name, size, times, **extra):
        med = statistics.median(times)
        row = {"benchmark": name, "size": size, "median_ms": med, "min_ms": min(times),
               "repeats": len(times), **extra}
        rows.append(row)
        print(f"{name:<40} {size:<24} {med:10.3f} ms", flush=True)
        return row

    def run(name, size, fn, repeats_=repeats, **extra):
        try:
            return record(name, size, time_ms(fn, repeats_, args.warmup, device), **extra)
        except Exception as error:  # one failing contender must not hide the others
            rows.append({"benchmark": name, "size": size, "error": repr(error)[:300]})
            print(f"{name:<40} {size:<24} FAILED {error!r}"[:300], flush=True)
            return None

    # 1. End-to-end assign (fp16 distances + solver), the op a training step calls.
    for b in sizes:
        x, noise = workload(b, d, device, args.seed + b)
        reps = max(3, repeats // 4) if b >= 16384 else repeats
        row = run("assign fp16 (immiscible_ops)", f"B={b} D={d}",
                  lambda x=x, noise=noise: immiscible_ops.assign(x, noise, validate=False), reps)
        if row and args.check and b <= 4096:
            cost = immiscible_ops.pairwise_distance(x, noise, precision="fp16")
            row["excess"] = excess(cost, immiscible_ops.assign(x, noise))

    # 1b. Exact on the device without the CUDA kernel: solver="certified" (torch ops for the
    # candidates and the certificate, the sparse solve on the host), against the auction on the
    # device and the CPU exact solver on a host copy of the same fp16 distances.
    for b in sizes[:2]:
        x, noise = workload(b, d, device, args.seed + b)
        cost = immiscible_ops.pairwise_distance(x, noise, precision="fp16")
        reps = max(3, repeats // 4)
        row = run("linear_assignment certified (exact)", f"B={b} (solve only)",
                  lambda cost=cost: immiscible_ops.linear_assignment(cost, solver="certified"),
                  reps)
        if row and args.check:
            row["excess"] = excess(cost, immiscible_ops.linear_assignment(cost, solver="certified"))
        run("linear_assignment auction (device)", f"B={b} (solve only)",
            lambda cost=cost: immiscible_ops.linear_assignment(cost, validate=False), reps)
        run("linear_assignment exact (host copy)", f"B={b} (solve only)",
            lambda cost=cost: immiscible_ops.linear_assignment(cost.cpu(), solver="exact"), reps)

    # 2. Many small problems at once.
    p, n = small
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    batch = torch.rand(p, n, n, generator=g).to(device)
    run("linear_assignment batched", f"{p} x {n}x{n}",
        lambda: immiscible_ops.linear_assignment(batch, validate=False))

    # 3. The authors' recipe: fp16 torch.cdist on the device, scipy on the host.
    x, noise = workload(recipe_b, d, device, args.seed + recipe_b)
    if not args.skip_scipy:
        try:
            from scipy.optimize import linear_sum_assignment

            def recipe():
                dist = torch.cdist(x.half(), noise.half()) if device.type == "cuda" else \
                    torch.cdist(x, noise)
                _, cols = linear_sum_assignment(dist.float().cpu().numpy())
                return torch.from_numpy(cols).to(device)

            run("recipe: fp16 cdist + scipy (host)", f"B={recipe_b} D={d}", recipe,
                max(3, repeats // 4))
        except ImportError:
            print("scipy not importable: recipe skipped")
    run("assign fp16 (immiscible_ops)", f"B={recipe_b} D={d} (same seed)",
        lambda: immiscible_ops.assign(x, noise, validate=False))

    # 4. torch-linear-assignment (PyPI), its GPU path, on the same distances.
    try:
        from torch_linear_assignment import batch_linear_assignment

        for b in sizes[:2]:
            x, noise = workload(b, d, device, args.seed + b)
            cost = immiscible_ops.pairwise_distance(x, noise, precision="fp16")
            run("torch-linear-assignment", f"B={b} (solve only)",
                lambda cost=cost: batch_linear_assignment(cost.unsqueeze(0)), max(3, repeats // 4))
            run("linear_assignment (immiscible_ops)", f"B={b} (solve only)",
                lambda cost=cost: immiscible_ops.linear_assignment(cost, validate=False))
        run("torch-linear-assignment", f"{p} x {n}x{n}",
            lambda: batch_linear_assignment(batch), max(3, repeats // 4))
    except ImportError:
        print("torch_linear_assignment not importable: skipped")

    # 5. Distance kernel throughput against a measured fp16 matmul peak.
    nn, mm, dd = dist_nmd
    xa, ya = workload(max(nn, mm), dd, device, args.seed + 7)
    xa, ya = xa[:nn], ya[:mm]
    flops = 2.0 * nn * mm * dd
    xh, yh = xa.half(), ya.half().t().contiguous()
    if device.type == "cuda":
        peak = run("torch.matmul fp16 (peak)", f"{nn}x{mm}x{dd}", lambda: xh @ yh)
        if peak:
            peak["tflops"] = flops / peak["median_ms"] / 1e9
    dist = run("pairwise_distance l2 fp16", f"N={nn} M={mm} D={dd}",
               lambda: immiscible_ops.pairwise_distance(xa, ya, precision="fp16"))
    if dist:
        dist["tflops"] = flops / dist["median_ms"] / 1e9

    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else (platform.processor() or platform.machine())),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "command": " ".join(sys.argv), "seed": args.seed, "warmup": args.warmup,
    }
    lines = [f"Device: {meta['device']}, torch {meta['torch']}, {meta['date']}",
             f"Command: `{meta['command']}`", "",
             "| benchmark | size | median ms | min ms | TFLOP/s | excess |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['benchmark']} | {r['size']} | failed | | | |")
            continue
        tf = f"{r['tflops']:.1f}" if "tflops" in r else ""
        ex = f"{r['excess']:.1e}" if "excess" in r else ""
        lines.append(f"| {r['benchmark']} | {r['size']} | {r['median_ms']:.3f} | "
                     f"{r['min_ms']:.3f} | {tf} | {ex} |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
