"""CPU auction vs the exact solver on rectangular and tie-heavy costs (docs/PERF.md).

Median of 3 runs in ms, one seed. "pool" is the immiscible noise pool: fp16 distances between
1024 images (0.5 N(0,1), D=4096) and a pool of 4096 noises. "squared" is the auction on the
problem squared by hand with zero-cost rows, where that finishes in reasonable time.

    python benchmarks/bench_auction_rect.py [--large]

--large adds uniform 1024x65536 (M = 64 N; 512 MB of float64).
"""
import argparse
import statistics
import time

import torch

import immiscible_ops as io

SQUARE_BY_HAND_UP_TO = 1024  # columns; beyond, the squared auction takes minutes


def median_ms(cost, solver, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        io.linear_assignment(cost, solver=solver, validate=False)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def squared_by_hand(cost):
    n, m = cost.shape
    return torch.cat([cost, cost.new_zeros(m - n, m)])


def pool_cost(n, m, dim, gen):
    images = 0.5 * torch.randn(n, dim, generator=gen)
    noise = torch.randn(m, dim, generator=gen)
    return io.pairwise_distance(images, noise, precision="fp16").double()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", action="store_true", help="add uniform 1024x65536")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 256), (64, 4096), (256, 1024), (256, 16384), (1024, 4096)]
    shapes += [(1024, 65536)] if args.large else []
    rows = [(f"uniform {n}x{m}", torch.rand(n, m, generator=gen, dtype=torch.float64))
            for n, m in shapes]
    rows.append(("pool 1024x4096, D=4096, fp16", pool_cost(1024, 4096, 4096, gen)))
    rows.append(("int 0..3 1024x1024", torch.randint(0, 4, (1024, 1024), generator=gen).double()))
    rows.append(("all-equal 1024x1024", torch.ones(1024, 1024, dtype=torch.float64)))
    print("| cost | exact ms | auction ms | auction/exact | auction on the squared problem ms |")
    print("|---|---|---|---|---|")
    for name, cost in rows:
        exact, auction = median_ms(cost, "exact"), median_ms(cost, "auction")
        n, m = cost.shape
        squared = "-"
        if n < m <= SQUARE_BY_HAND_UP_TO:
            squared = f"{median_ms(squared_by_hand(cost), 'auction'):.2f}"
        print(f"| {name} | {exact:.2f} | {auction:.2f} | {auction / exact:.1f}x | {squared} |",
              flush=True)


if __name__ == "__main__":
    main()
