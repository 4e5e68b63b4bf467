"""Bidding rounds of the CUDA auction on rectangular problems, without a GPU (docs/PERF.md).

"new": the kernel in csrc/cuda/auction.cuh (forward/reverse auction), run through the host
emulation (immiscible_ops.testing.auction_on_host, block mode, 64 threads), its answer checked
against scipy. "old": the dummy-row kernel it replaced, through its sequential replica
benchmarks/dummy_row_rounds.cpp (round-for-round equal to the emulated old kernel on the
shapes it could finish; see docs/PERF.md). Rounds do not depend on the device.

    python benchmarks/auction_rounds.py --shapes 64x4096 256x1024 1024x4096
    python benchmarks/auction_rounds.py --shapes 256x256 256x1024 --kinds int equal
"""

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from immiscible_ops.testing import auction_on_host


def workload(kind: str, n: int, m: int, dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * n + m)
    if kind == "uniform":
        return torch.rand(n, m, generator=g)
    if kind == "int":  # tie-heavy: integers 0..3
        return torch.randint(0, 4, (n, m), generator=g).float()
    if kind == "equal":
        return torch.ones(n, m)
    # the immiscible pool: images against a larger pool of noise, distances through fp16
    images = 0.5 * torch.randn(n, dim, generator=g)
    noise = torch.randn(m, dim, generator=g)
    return torch.cdist(images, noise).half().float()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", default=["64x4096", "256x1024"])
    parser.add_argument("--kinds", nargs="+", default=["uniform", "pool"],
                        choices=["uniform", "pool", "int", "equal"])
    parser.add_argument("--dim", type=int, default=4096)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    replica = work / "dummy_row_rounds"
    subprocess.run(["g++", "-std=c++20", "-O2", "-o", str(replica),
                    str(Path(__file__).resolve().parent / "dummy_row_rounds.cpp")], check=True)
    print("| N x M | costs | new: forward + reverse rounds | new: excess over scipy | "
          "old (dummy rows): rounds | old: excess over scipy | emulation wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        n, m = map(int, shape.split("x"))
        for kind in args.kinds:
            cost = workload(kind, n, m, args.dim)
            c = cost.double().numpy()
            rows, cols = linear_sum_assignment(c)
            best = float(c[rows, cols].sum())
            start = time.perf_counter()
            row_to_col, status, rounds = auction_on_host(cost, group="block", threads=64,
                                                         blocks=1, return_rounds=True)
            wall = time.perf_counter() - start
            assert int(status[0]) == 0
            new_total = float(c[np.arange(n), row_to_col[0].numpy()].sum())
            path = work / "cost.f32"
            cost.numpy().tofile(path)
            out = subprocess.run([str(replica), str(path), str(n), str(m)], check=True,
                                 capture_output=True, text=True).stdout.split()
            fields = dict(f.split("=") for f in out)
            old_rounds = fields["rounds"] + ("" if fields["complete"] == "1" else " (round cap hit)")
            print(f"| {n} x {m} | {kind} | {int(rounds[0, 0])} + {int(rounds[0, 1])} | "
                  f"{new_total - best:.2g} | {old_rounds} | {float(fields['total']) - best:.2g} | "
                  f"{wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
