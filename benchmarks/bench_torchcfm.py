"""torchcfm's exact minibatch-OT sampler: POT's ot.emd (torchcfm.optimal_transport.OTPlanSampler)
vs immiscible_ops.integrations.torchcfm.OTPlanSampler, side by side.

    python benchmarks/bench_torchcfm.py                                  # B 128..2048, D 2 and 3*32*32
    python benchmarks/bench_torchcfm.py --batch 128 512 --dim 2 --repeats 3
    python benchmarks/bench_torchcfm.py --threads 1 --markdown           # docs/PERF.md's table
    python benchmarks/bench_torchcfm.py --batch 2048 --dim 2 8 --repeats 1 --peers   # + scipy, lap

Per (B, D), the same seeded x0, x1 [B, D] (standard normal, x1 shifted by 1) for both; columns:
  solve       the plan from the [B, B] cost alone: ot.emd(unif, unif, M) vs linear_assignment(M)
  sample_plan what a training step pays: torch.cdist(x0, x1) ** 2, the plan, and torchcfm's
              sampling of B pairs (replace=True, numpy's global state seeded alike)
  excess      plan total minus scipy's optimum on the same float32 cost, relative to the optimum
  same pairs  whether the two samplers returned identical (x0[i], x1[j]) batches
  POT warned  whether ot.emd warned (its numItermax=100000 cap: the plan is then not optimal)
Medians of --repeats consecutive calls per contender, after one warm-up call.
Needs torchcfm (pip install --no-deps torchcfm) and pot.
"""

import argparse
import statistics
import warnings

import numpy as np
import torch

from immiscible_ops import linear_assignment
from immiscible_ops.bench import time_ms
from immiscible_ops.integrations.torchcfm import OTPlanSampler as Ours


def peers(m: np.ndarray) -> str:
    import time

    from scipy.optimize import linear_sum_assignment
    out = []
    for name, fn in (("scipy", lambda: linear_sum_assignment(m)),
                     ("lap.lapjv", lambda: __import__("lap").lapjv(m.astype(np.float64))),
                     ("ours exact", lambda: linear_assignment(torch.from_numpy(m))),
                     ("ours auction", lambda: linear_assignment(torch.from_numpy(m), solver="auction"))):
        start = time.perf_counter()
        try:
            fn()
        except ImportError:
            continue
        out.append(f"{name} {(time.perf_counter() - start) * 1e3:.0f}")
    return ", ".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    p.add_argument("--dim", type=int, nargs="+", default=[2, 3 * 32 * 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--peers", action="store_true",
                   help="also time scipy, lap.lapjv and our auction once on each cost")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads (0: torch's default; on a loaded machine each "
                        "parallel op of torch.cdist can wait milliseconds for its second thread)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import ot
    from scipy.optimize import linear_sum_assignment
    from torchcfm.optimal_transport import OTPlanSampler as TorchCFM

    theirs, ours = TorchCFM(method="exact"), Ours(method="exact")
    print(f"torch threads={torch.get_num_threads()} POT {ot.__version__} repeats={args.repeats} "
          "(median ms)")
    rows = []
    for d in args.dim:
        for b in args.batch:
            g = torch.Generator().manual_seed(1000 * b + d)
            x0 = torch.randn(b, d, generator=g)
            x1 = torch.randn(b, d, generator=g) + 1.0
            m = (torch.cdist(x0, x1) ** 2).numpy()
            m64 = m.astype(np.float64)
            r, c = linear_sum_assignment(m)
            optimum = m64[r, c].sum()

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pot_plan = ot.emd(ot.unif(b), ot.unif(b), m)
            pot_warned = any("numItermax" in str(w.message) for w in caught)
            our_perm = linear_assignment(torch.from_numpy(m)).numpy()
            pot_excess = (m64 * (pot_plan > 0)).sum() - optimum if (pot_plan > 0).sum() == b else \
                float((m64 * pot_plan).sum() * b - optimum)
            our_excess = m64[np.arange(b), our_perm].sum() - optimum

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                np.random.seed(0)
                want = theirs.sample_plan(x0, x1)
                np.random.seed(0)
                got = ours.sample_plan(x0, x1)
                same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
                # Each contender's calls back to back (warm caches and threads, as in a training
                # loop), median of the repeats.
                calls = {
                    "solve_pot": lambda b=b, m=m: ot.emd(ot.unif(b), ot.unif(b), m),
                    "solve_ours": lambda m=m: linear_assignment(torch.from_numpy(m)),
                    "plan_pot": lambda x0=x0, x1=x1: theirs.sample_plan(x0, x1),
                    "plan_ours": lambda x0=x0, x1=x1: ours.sample_plan(x0, x1),
                }
                med = {name: statistics.median(time_ms(call, args.repeats))
                       for name, call in calls.items()}
            pot_excess /= optimum
            our_excess /= optimum
            if args.peers:
                print(f"B={b:5d} D={d:5d}  once each (ms): " + peers(m), flush=True)
            rows.append((b, d, med, pot_excess, our_excess, same, pot_warned))
            print(f"B={b:5d} D={d:5d}  solve: POT {med['solve_pot']:8.1f}  ours {med['solve_ours']:7.1f} "
                  f"({med['solve_pot'] / med['solve_ours']:5.1f}x)   sample_plan: torchcfm "
                  f"{med['plan_pot']:8.1f}  ours {med['plan_ours']:7.1f} "
                  f"({med['plan_pot'] / med['plan_ours']:5.1f}x)   excess POT {pot_excess:.1e} "
                  f"ours {our_excess:.0e}  same pairs {same}  POT warned {pot_warned}", flush=True)
    if args.markdown:
        print("\n| B | D | solve: ot.emd (ms) | solve: ours (ms) | speedup | sample_plan: torchcfm (ms) "
              "| sample_plan: ours (ms) | speedup | POT excess (relative) | ours | same pairs | POT warned |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for b, d, med, pe, oe, same, warned in rows:
            print(f"| {b} | {d} | {med['solve_pot']:.1f} | {med['solve_ours']:.1f} | "
                  f"{med['solve_pot'] / med['solve_ours']:.1f}x | {med['plan_pot']:.1f} | "
                  f"{med['plan_ours']:.1f} | {med['plan_pot'] / med['plan_ours']:.1f}x | {pe:.1e} | "
                  f"{oe:.0e} | {'yes' if same else 'no'} | {'yes' if warned else 'no'} |")


if __name__ == "__main__":
    main()
