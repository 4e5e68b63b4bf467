"""Where the certified exact path overtakes the dense solver: the same costs solved by the
certified path at every size (`torch.ops.immiscible._certified_solve`, which skips the size
gate) and by the dense solver (`linear_assignment(solver="exact")` with
IMMISCIBLE_DISABLE_CERTIFIED=1, read once per process, hence one subprocess per side); one
thread, thread CPU time (a loaded machine moves wall time far more than this), median of
--repeats. The size gate in csrc/cpu/lap_certified.cpp (certified_pays) comes from this table.

    python benchmarks/certified_crossover.py                      # square, B 768..2048, D 64..4096
    python benchmarks/certified_crossover.py --rect               # pools, N x 2N and N x 4N
"""

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, statistics, sys, time, torch, immiscible_ops as io
torch.set_num_threads(1)
out = []
for n, m, d in json.loads(sys.argv[1]):
    g = torch.Generator().manual_seed(n * 7 + m + d)
    x, noise = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    cost = torch.cdist(x.double(), noise.double())
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.thread_time()
        if sys.argv[3] == "certified":
            torch.ops.immiscible._certified_solve(cost, 0, 0, 4, False)
        else:
            io.linear_assignment(cost, solver="exact")
        times.append(time.thread_time() - start)
    out.append(statistics.median(times) * 1e3)
print(json.dumps(out))
"""


def measure(shapes, repeats, certified):
    env = dict(os.environ)
    env.pop("IMMISCIBLE_DISABLE_CERTIFIED", None)
    if not certified:
        env["IMMISCIBLE_DISABLE_CERTIFIED"] = "1"
    done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(shapes), str(repeats),
                           "certified" if certified else "dense"],
                          env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rect", action="store_true", help="pools N x 2N and N x 4N instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.rect:
        shapes = [(n, f * n, 1024) for n in (512, 1024, 1536, 2048) for f in (2, 4)]
    else:
        shapes = [(n, n, d) for n in (768, 1024, 1280, 1536, 2048) for d in (64, 1024, 4096)]
    dense = measure(shapes, args.repeats, certified=False)
    certified = measure(shapes, args.repeats, certified=True)
    print("| N | M | D | certified (ms) | dense (ms) | dense / certified |")
    print("|---|---|---|---|---|---|")
    for (n, m, d), c, t in zip(shapes, certified, dense, strict=True):
        print(f"| {n} | {m} | {d} | {c:.1f} | {t:.1f} | {t / c:.2f}x |")


if __name__ == "__main__":
    main()
