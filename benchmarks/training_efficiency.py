"""Training-efficiency experiment: vanilla vs immiscible noise couplings (assign, knn, flip), 3 seeds,
three objectives (DDPM, flow matching, consistency training), on a 2-D Gaussian mixture, digits and
32x32x3 patches of real photographs; quality at several sampling step counts with 95% t-intervals
over seeds, steps and seconds to reach vanilla's final quality, the noise call's share of a step.

    python benchmarks/training_efficiency.py [--out runs/experiment]       # --scale cpu (default)
    python benchmarks/training_efficiency.py --objectives consistency --sample-steps 1 2 4
    python benchmarks/training_efficiency.py --scale gpu --device cuda --threads 0

Same as `python -m immiscible_ops.train experiment`; --help lists every flag.
"""

import sys

from immiscible_ops.train.experiment import main

if __name__ == "__main__":
    sys.exit(main())
