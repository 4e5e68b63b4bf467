"""`immiscible-bench`: exact linear assignment on the immiscible workload, this project vs every
peer a user could pick that is installed (scipy, lap, lapx, lapjv, fastlap; OR-Tools on integer
costs; POT's ot.emd), measured side by side on the same costs.

Workload: L2 distances between images x = s*N(0,1) and noise N(0,1), float64 cost [B, B], the
matrix the Immiscible Diffusion recipe hands to scipy. s = 1 (`--image-std 1`) is what SD/SDXL/FLUX
latents look like after the VAE's scaling factor; s = 0.5 is the default, as in earlier tables.
Every contender solves the same matrix; the table reports the median of `--repeats` runs and
checks every total against the reference (scipy's, else ours).
"""

import argparse
import json
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch

import immiscible_ops as io


def immiscible_cost(batch: int, dim: int, seed: int = 0, device: str = "cpu",
                    image_std: float = 0.5) -> torch.Tensor:
    """The benchmark workload: float64 L2 cost [batch, batch] between image_std*N(0,1) and N(0,1)."""
    g = torch.Generator().manual_seed(seed)
    x = image_std * torch.randn(batch, dim, generator=g)
    noise = torch.randn(batch, dim, generator=g)
    return torch.cdist(x.double(), noise.double()).to(device)


def contenders() -> Dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> solve(cost [N, M] float64 ndarray) -> row_to_col [N]; the installed ones only."""
    solvers: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "immiscible_ops": lambda c: io.linear_assignment(torch.from_numpy(c)).numpy(),
    }
    try:
        from scipy.optimize import linear_sum_assignment

        solvers["scipy"] = lambda c: linear_sum_assignment(c)[1]
    except ImportError:
        pass
    try:
        import lap

        solvers["lap.lapjv"] = lambda c: lap.lapjv(c, extend_cost=c.shape[0] != c.shape[1])[1]
    except ImportError:
        pass
    try:
        import lapx  # noqa: F401  (a fork of lap; same API)

        solvers["lapx.lapjv"] = lambda c: lapx.lapjv(c, extend_cost=c.shape[0] != c.shape[1])[1]
    except ImportError:
        pass
    try:
        import lapjv  # an AVX2 JV that solves in float32 (its duals come back as float32)

        solvers["lapjv"] = lambda c: lapjv.lapjv(c)[0] if c.shape[0] == c.shape[1] else None
    except ImportError:
        pass
    try:
        import fastlap

        solvers["fastlap"] = lambda c: fastlap.linear_sum_assignment(c)[1]
    except ImportError:
        pass
    try:
        from ortools.graph.python import linear_sum_assignment as ortools_lsa

        solvers["ortools"] = lambda c: _ortools(ortools_lsa, c)
    except ImportError:
        pass
    try:
        import ot

        solvers["ot.emd"] = lambda c: _pot_emd(ot, c)
    except ImportError:
        pass
    return solvers


def _ortools(module, c: np.ndarray) -> Optional[np.ndarray]:
    """OR-Tools' SimpleLinearSumAssignment, which takes int64 costs: integer costs only."""
    if not np.array_equal(c, np.round(c)) or c.shape[0] != c.shape[1]:
        return None
    n = c.shape[0]
    solver = module.SimpleLinearSumAssignment()
    rows, cols = np.divmod(np.arange(n * n), n)
    solver.add_arcs_with_cost(rows, cols, c.astype(np.int64).ravel())
    if solver.solve() != solver.OPTIMAL:
        raise RuntimeError("OR-Tools: no optimal assignment")
    return np.array([solver.right_mate(i) for i in range(n)])


def _pot_emd(ot, c: np.ndarray) -> Optional[np.ndarray]:
    """POT's network simplex on uniform marginals: an optimal plan of an assignment problem is
    a permutation (square costs), read back row by row."""
    if c.shape[0] != c.shape[1]:
        return None
    n = c.shape[0]
    plan = ot.emd(np.full(n, 1.0 / n), np.full(n, 1.0 / n), c, numItermax=10**8)
    return plan.argmax(axis=1)


def time_ms(fn: Callable[[], object], repeats: int, warmup: int = 1,
            device: Union[str, torch.device] = "cpu") -> List[float]:
    """Milliseconds of each of `repeats` calls of fn() after `warmup` calls (first-call
    allocations and lazy imports stay out of the numbers); CUDA events on a GPU device."""
    for _ in range(warmup):
        fn()
    times = []
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return times


# Tie-heavy families, where a shortest-path solver that settles tied columns one at a time
# degrades to O(n^3): the column "dim" of the table names the family instead of a dimension.
TIE_FAMILIES = {
    "int0-100": lambda n, g: torch.randint(0, 100, (n, n), generator=g).double(),
    "int0-4": lambda n, g: torch.randint(0, 4, (n, n), generator=g).double(),
    "all-equal": lambda n, g: torch.full((n, n), 2.0, dtype=torch.float64),
}


def run_case(batch: int, dim, repeats: int, skip: Optional[set] = None,
             image_std: float = 0.5, slow_after: Optional[float] = None) -> dict:
    """Times every contender on one workload (dim: an int, or a TIE_FAMILIES name); returns a
    row with medians (s) and totals. A contender whose first solve takes longer than
    `slow_after` seconds is timed once and added to `skip` (rows are run smallest first)."""
    if isinstance(dim, str):
        cost = TIE_FAMILIES[dim](batch, torch.Generator().manual_seed(0)).numpy()
    else:
        cost = immiscible_cost(batch, dim, image_std=image_std).numpy()
    row = {"batch": batch, "dim": dim, "image_std": image_std, "seconds": {}, "total": {}}
    for name, solve in contenders().items():
        if skip is not None and name in skip:
            continue
        start = time.perf_counter()
        cols = solve(cost)
        first = time.perf_counter() - start
        if cols is None:  # the contender does not take this kind of cost
            continue
        row["total"][name] = float(cost[np.arange(batch), cols].sum())
        if slow_after is not None and first > slow_after and name != "immiscible_ops":
            row["seconds"][name] = first
            skip.add(name)
            continue
        row["seconds"][name] = statistics.median(time_ms(lambda solve=solve: solve(cost), repeats)) / 1e3
    return row


def run_batched(problems: int, size: int, repeats: int) -> dict:
    """`problems` uniform [size, size] costs: one batched call vs a loop of each contender."""
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(problems, size, size, generator=g, dtype=torch.float64)
    arrays = [c.numpy() for c in cost]
    row = {"batch": f"{problems}x{size}", "dim": "uniform", "seconds": {}, "total": {}}
    for name, solve in contenders().items():
        if name == "immiscible_ops":
            run = lambda: io.linear_assignment(cost)  # noqa: E731  (one batched call)
            cols = run().numpy()
        else:
            if solve(arrays[0]) is None:  # the contender does not take this kind of cost
                continue
            run = lambda solve=solve: [solve(a) for a in arrays]  # noqa: E731
            cols = np.stack(run())
        row["total"][name] = float(sum(a[np.arange(size), c].sum() for a, c in zip(arrays, cols, strict=True)))
        row["seconds"][name] = statistics.median(time_ms(run, repeats)) / 1e3
    return row


def format_table(rows: List[dict]) -> str:
    names = [n for n in contenders() if any(n in r["seconds"] for r in rows)]
    head = ("| batch | dim | " + " | ".join(f"{n} (ms)" for n in names)
            + " | vs scipy | vs best peer | not optimal |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        s = r["seconds"]
        cells = [f"{s[n] * 1e3:.1f}" if n in s else "-" for n in names]
        ours = s["immiscible_ops"]
        vs_scipy = f"{s['scipy'] / ours:.1f}x" if "scipy" in s else "-"
        peers = {n: t for n, t in s.items() if n != "immiscible_ops"}
        best = min(peers, key=peers.get) if peers else None
        vs_best = f"{peers[best] / ours:.2f}x ({best})" if best else "-"
        ref = r["total"].get("scipy", r["total"]["immiscible_ops"])
        worse = [n for n, t in r["total"].items() if abs(t - ref) > 1e-9 * max(1.0, abs(ref))]
        lines.append(f"| {r['batch']} | {r['dim']} | " + " | ".join(cells)
                     + f" | {vs_scipy} | {vs_best} | {', '.join(worse) or 'none'} |")
    return "\n".join(lines)


def environment() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1024], help="batch sizes B (cost is B x B)")
    parser.add_argument("--dim", type=int, nargs="+", default=[4096], help="image dimensions D")
    parser.add_argument("--ties", type=int, metavar="N",
                        help="also time N x N tie-heavy costs (" + ", ".join(TIE_FAMILIES) + ")")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batched", type=int, nargs=2, metavar=("PROBLEMS", "SIZE"),
                        help="also time PROBLEMS uniform SIZE x SIZE problems (e.g. 64 256)")
    parser.add_argument("--skip", nargs="*", default=[], help="contenders to leave out (e.g. scipy)")
    parser.add_argument("--image-std", type=float, default=0.5,
                        help="std of the images (noise is N(0,1)); 1.0: unit-variance latents")
    parser.add_argument("--slow-after", type=float, default=None, metavar="SECONDS",
                        help="time a contender once, and drop it from larger batches, when its "
                             "first solve takes longer than this")
    parser.add_argument("--json", help="write the rows and environment to this file")
    args = parser.parse_args(argv)

    rows = []
    for d in args.dim:
        skip = set(args.skip)
        rows += [run_case(b, d, args.repeats, skip, args.image_std, args.slow_after)
                 for b in sorted(args.batch)]
    if args.ties:
        rows += [run_case(args.ties, family, args.repeats, set(args.skip)) for family in TIE_FAMILIES]
    if args.batched:
        rows.append(run_batched(*args.batched, args.repeats))
    env = environment()
    print(f"# exact linear assignment, CPU ({env['cpu']}, {env['threads']} threads), "
          f"images {args.image_std}*N(0,1), median of {args.repeats}, {env['date']}")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
