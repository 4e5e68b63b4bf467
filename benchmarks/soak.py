"""Soak: many calls of linear_assignment and assign at training sizes, memory and time per call
over the run. A training loop makes one such call per step for days, so memory must stay flat.

    python benchmarks/soak.py                                  # 10^5 calls each, JSON + plot
    python benchmarks/soak.py --calls 20000 --out runs/soak     # shorter
    python benchmarks/soak.py --plot a.json b.json --out runs/cmp   # overlay earlier runs

Every `--every` calls it records RSS (/proc/self/statm), the bytes glibc's malloc has handed out
and not got back (mallinfo2: what a leak grows, without RSS's page-granular noise), and the mean
time per call over the window. Same seeded inputs for every call.
"""

import argparse
import ctypes
import json
import os
import platform
import time
from pathlib import Path

import torch

import immiscible_ops as io


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _heap_probe():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # not glibc >= 2.33: RSS only
        return lambda: float("nan")

    def heap_bytes():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd
    return heap_bytes


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def workloads(batch: int, dim: int):
    """Name -> zero-argument call, on fixed inputs of a training step's size."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dim, generator=gen) * 0.5
    noise = torch.randn(batch, dim, generator=gen)
    cost = torch.cdist(x, noise)
    return {
        "linear_assignment": (f"linear_assignment [{batch}, {batch}] float32",
                              lambda: io.linear_assignment(cost)),
        "assign": (f"assign x [{batch}, {dim}] (fp16 L2 + exact)", lambda: io.assign(x, noise)),
    }


def soak(fn, calls: int, every: int, heap_bytes):
    for _ in range(min(1000, calls // 10)):  # warm-up
        fn()
    samples = []
    start = time.perf_counter()
    window = start
    for i in range(1, calls + 1):
        fn()
        if i % every == 0:
            now = time.perf_counter()
            samples.append({"call": i, "rss_mb": rss_bytes() / 2**20,
                            "heap_mb": heap_bytes() / 2**20,
                            "us_per_call": (now - window) / every * 1e6})
            window = now
    first, last = samples[0], samples[-1]
    times = sorted(s["us_per_call"] for s in samples)
    return {
        "calls": calls, "seconds": time.perf_counter() - start, "samples": samples,
        "rss_growth_mb": last["rss_mb"] - first["rss_mb"],
        "heap_growth_bytes_per_call": (last["heap_mb"] - first["heap_mb"]) * 2**20
        / max(last["call"] - first["call"], 1),
        "median_us_per_call": times[len(times) // 2],
    }


def plot(runs: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, result in runs.items():
        for name, r in result["workloads"].items():
            calls = [s["call"] for s in r["samples"]]
            tag = f"{name} ({label})" if len(runs) > 1 else name
            axes[0].plot(calls, [s["rss_mb"] - r["samples"][0]["rss_mb"] for s in r["samples"]], label=tag)
            axes[1].plot(calls, [s["heap_mb"] - r["samples"][0]["heap_mb"] for s in r["samples"]], label=tag)
            axes[2].plot(calls, [s["us_per_call"] for s in r["samples"]], label=tag)
    for ax, title in zip(axes, ["RSS growth (MB)", "malloc'd bytes growth (MB)", "time per call (us)"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("call")
        ax.grid(alpha=0.3)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--every", type=int, default=1000, help="calls per sample")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--workloads", nargs="+", default=["linear_assignment", "assign"],
                   choices=["linear_assignment", "assign"])
    p.add_argument("--label", default="this build")
    p.add_argument("--out", default="runs/soak", help="writes <out>.json and <out>.png")
    p.add_argument("--plot", nargs="+", metavar="JSON", help="only plot these earlier runs")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.plot:
        runs = {}
        for f in args.plot:
            result = json.loads(Path(f).read_text())
            runs[result["label"]] = result
        plot(runs, out.with_suffix(".png"))
        return
    if args.every < 1 or args.calls < 2 * args.every:
        p.error("--calls must be at least twice --every")
    for name in ("batch", "dim", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    heap_bytes = _heap_probe()
    result = {"label": args.label, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "threads": args.threads, "module": io.__file__, "date": time.strftime("%Y-%m-%d"), "workloads": {}}
    chosen = workloads(args.batch, args.dim)
    for name, fn in (chosen[key] for key in args.workloads):
        r = soak(fn, args.calls, args.every, heap_bytes)
        result["workloads"][name] = r
        print(f"{name}: {r['calls']} calls in {r['seconds']:.0f} s, median {r['median_us_per_call']:.0f} us/call, "
              f"RSS {r['rss_growth_mb']:+.2f} MB, heap {r['heap_growth_bytes_per_call']:+.2f} B/call")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot({args.label: result}, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
