import sys

from immiscible_ops.train.cli import main

sys.exit(main())
