"""Instructions the exact CPU solver executes, counted by callgrind: a before/after measure that
a shared, loaded machine cannot disturb (wall-clock medians on the 2-core VM moved by 2x while
other jobs ran; these counts repeat exactly).

    python benchmarks/instructions/exact_instructions.py                 # this checkout
    python benchmarks/instructions/exact_instructions.py --rev c536b21   # and an older commit

Builds exact_driver.cpp against csrc/cpu/ (of the checkout, and of each --rev via `git show`),
writes the seeded cost files once, and counts the instructions inside solve_lap_exact only
(file reading excluded). Needs g++ and valgrind. Counts are per binary: both sides are built
here with the same flags. The AVX2 kernels run under valgrind as on the CPU.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["csrc/cpu/lap_exact.cpp", "csrc/cpu/lap_exact_kernels.cpp", "csrc/cpu/lap_exact_kernels.h",
           "csrc/cpu/lap_solvers.h", "csrc/cpu/lap_auction.cpp"]  # the auction: the warm start's duals


def cost_files(folder: Path, seeds: int) -> dict:
    """Name -> path of the workloads: the immiscible L2 cost (x = 0.5 N(0,1), noise N(0,1),
    D = 4096) at B = 512, 1024, 2048 over `seeds` seeds, 2-D and 8-D point clouds (the auction
    warm start's case) and the tie-heavy 1024 x 1024 kinds."""
    import torch  # for cdist, the cost users hand to the solver

    files = {}

    def save(name, cost):
        path = folder / f"{name}.bin"
        with open(path, "wb") as f:
            np.array(cost.shape, dtype=np.int64).tofile(f)
            np.ascontiguousarray(cost, dtype=np.float64).tofile(f)
        files[name] = path

    for b, count in [(512, seeds), (1024, seeds), (2048, max(seeds // 2, 1))]:
        for s in range(count):
            g = np.random.default_rng(1000 * b + s)
            x, z = 0.5 * g.standard_normal((b, 4096)), g.standard_normal((b, 4096))
            save(f"l2 {b}x{b} seed{s}", torch.cdist(torch.from_numpy(x), torch.from_numpy(z)).numpy())
    for dim in (2, 8):  # torchcfm's squared Euclidean plans between point clouds, x1 shifted by 1
        g = np.random.default_rng(dim)
        x0, x1 = g.standard_normal((1024, dim)), g.standard_normal((1024, dim)) + 1.0
        save(f"points D={dim} 1024x1024", ((x0[:, None, :] - x1[None, :, :]) ** 2).sum(-1))
    g = np.random.default_rng(7)
    save("int0-100 1024x1024", g.integers(0, 101, (1024, 1024)))
    save("int0-4 1024x1024", g.integers(0, 5, (1024, 1024)))
    save("all-equal 1024x1024", np.ones((1024, 1024)))
    save("uniform 256x1024", g.random((256, 1024)))
    return files


def build(rev, work: Path) -> Path:
    """The driver against csrc/cpu of `rev` (None: the working tree)."""
    src = work / (rev or "worktree")
    (src / "cpu").mkdir(parents=True)
    for name in SOURCES:
        text = (ROOT / name).read_text() if rev is None else subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{name}"], check=True, capture_output=True,
            text=True).stdout
        (src / "cpu" / Path(name).name).write_text(text)
    exe = src / "driver"
    subprocess.run(["g++", "-O3", "-std=c++17", f"-I{src}", str(Path(__file__).with_name("exact_driver.cpp")),
                    str(src / "cpu/lap_exact.cpp"), str(src / "cpu/lap_exact_kernels.cpp"),
                    str(src / "cpu/lap_auction.cpp"), "-o", str(exe)],
                   check=True)
    return exe


def count(exe: Path, path: Path):
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         "--toggle-collect=immiscible::cpu::solve_lap_exact*", str(exe), str(path)],
        capture_output=True, text=True, check=True)
    instructions = int(re.search(r"Collected : (\d+)", done.stderr).group(1))
    total = float(re.search(r"total=(\S+)", done.stdout).group(1))
    return instructions, total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", action="append", default=[], help="also count this git revision")
    p.add_argument("--seeds", type=int, default=4, help="seeds per L2 size (half at 2048)")
    p.add_argument("--json", help="write the counts here")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = cost_files(work, args.seeds)
        builds = {rev or "this checkout": build(rev, work) for rev in args.rev + [None]}
        table = {name: {} for name in files}
        for label, exe in builds.items():
            for name, path in files.items():
                table[name][label] = count(exe, path)
                print(f"{label:>14}  {name:<24} {table[name][label][0] / 1e6:9.2f} M", flush=True)
    labels = list(builds)
    print("\n| cost | " + " | ".join(f"{label} (M instr.)" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, row in table.items():
        totals = {row[label][1] for label in labels}
        flag = "" if len(totals) == 1 else " (totals differ!)"
        print(f"| {name}{flag} | " + " | ".join(f"{row[label][0] / 1e6:.2f}" for label in labels) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
