"""Training-efficiency experiment: vanilla vs immiscible noise couplings (assign, knn, flip), 3 seeds,
both objectives (DDPM and flow matching), on a 2-D Gaussian mixture, digits and 32x32x3 patches of
real photographs; quality at 1, 2, 4, 8, 32 sampling steps with 95% t-intervals over seeds.

    python benchmarks/training_efficiency.py [--out runs/experiment]       # --scale cpu (default)
    python benchmarks/training_efficiency.py --scale gpu --device cuda --threads 0

Same as `python -m immiscible_ops.train experiment`; --help lists every flag.
"""

import sys

from immiscible_ops.train.experiment import main

if __name__ == "__main__":
    sys.exit(main())
