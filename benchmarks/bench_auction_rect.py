"""CPU auction vs exact solver on rectangular and tie-heavy costs (median of 3, ms, one seed)."""
import statistics
import time

import torch

import immiscible_ops as io


def median_ms(cost, solver, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        io.linear_assignment(cost, solver=solver, validate=False)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


if __name__ == "__main__":
    gen = torch.Generator().manual_seed(0)
    rows = [(f"uniform {n}x{m}", torch.rand(n, m, generator=gen, dtype=torch.float64))
            for n, m in [(64, 256), (64, 4096), (256, 1024), (256, 16384), (1024, 4096)]]
    rows.append(("int 0..3 1024x1024", torch.randint(0, 4, (1024, 1024), generator=gen).double()))
    rows.append(("all-equal 1024x1024", torch.ones(1024, 1024, dtype=torch.float64)))
    print("| cost | exact ms | auction ms | auction/exact |\n|---|---|---|---|")
    for name, cost in rows:
        exact, auction = median_ms(cost, "exact"), median_ms(cost, "auction")
        print(f"| {name} | {exact:.2f} | {auction:.2f} | {auction / exact:.1f}x |", flush=True)
