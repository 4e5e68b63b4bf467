"""CPU table: exact linear assignment, this project vs scipy and lap (and lapx if installed),
over batch sizes 128..4096 and dims 64..16384 on the immiscible workload, plus batched small
problems. Writes a markdown table to stdout and JSON next to it.

    python benchmarks/bench_cpu.py                       # the full grid (several minutes: scipy is slow)
    python benchmarks/bench_cpu.py --batch 2048 --dim 4096 --json benchmarks/results/cpu_2048.json
"""

import sys
from pathlib import Path

from immiscible_ops.bench import main

DEFAULTS = [
    "--batch", "128", "256", "512", "1024", "2048", "4096",
    "--dim", "64", "1024", "4096", "16384",
    "--batched", "64", "256",
    "--json", str(Path(__file__).parent / "results" / "cpu.json"),
]

if __name__ == "__main__":
    args = sys.argv[1:] or DEFAULTS
    if "--json" in args:
        Path(args[args.index("--json") + 1]).parent.mkdir(parents=True, exist_ok=True)
    main(args)
