"""Training-efficiency experiment: vanilla vs immiscible noise couplings (assign, knn, flip) on
digits and a 2-D Gaussian mixture, 3 seeds, one budget; ~15 min on a 2-core CPU by default.

    python benchmarks/training_efficiency.py [--out runs/experiment] [--plot docs/img/x.png]
    python benchmarks/training_efficiency.py --device cuda --image-steps 5000 --points-steps 10000

Same as `python -m immiscible_ops.train experiment`; --help lists every flag.
"""

import sys

from immiscible_ops.train.experiment import main

if __name__ == "__main__":
    sys.exit(main())
