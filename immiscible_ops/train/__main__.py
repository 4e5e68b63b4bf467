import os
import sys

from immiscible_ops.train.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # Under torchrun, skip interpreter shutdown. Gloo's worker threads (torch 2.13) can still be
    # releasing finished collectives whose tensors belong to Python when the interpreter
    # finalizes; the GIL they then ask for kills them inside a noexcept frame and the process
    # aborts ("terminate called without an active exception", about 1 run in 100, after all
    # results are written). destroy_process_group does not join those threads, so exit here,
    # after the trainer has closed its files and the group.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
