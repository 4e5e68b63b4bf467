"""CPU table: exact linear assignment, this project vs every installed peer (scipy, lap, lapx,
lapjv, fastlap, OR-Tools on integer costs, POT's ot.emd), over batch sizes 128..8192 and dims
64..16384 on unit-variance latents (images and noise both N(0,1), as SD/SDXL/FLUX latents are
after the VAE's scaling factor), plus batched small problems. Peers slower than 10 s on a size
are timed once there and dropped from larger ones. Writes a markdown table to stdout and JSON.

    python benchmarks/bench_cpu.py                       # the full grid (an hour: scipy is slow)
    python benchmarks/bench_cpu.py --batch 2048 --dim 4096 --json benchmarks/results/cpu_2048.json
"""

import sys
from pathlib import Path

from immiscible_ops.bench import main

DEFAULTS = [
    "--batch", "128", "256", "512", "1024", "2048", "4096", "8192",
    "--dim", "64", "1024", "4096", "16384",
    "--image-std", "1.0", "--slow-after", "10",
    "--batched", "64", "256",
    "--json", str(Path(__file__).parent / "results" / "cpu.json"),
]

if __name__ == "__main__":
    args = sys.argv[1:] or DEFAULTS
    if "--json" in args:
        Path(args[args.index("--json") + 1]).parent.mkdir(parents=True, exist_ok=True)
    main(args)
