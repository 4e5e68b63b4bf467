"""The CUDA auction's own source (csrc/cuda/auction.cuh) run on the CPU, for tests and for anyone
auditing the GPU algorithm without a GPU. Each emulated GPU thread is a std::thread; slow (seconds
for a few hundred columns), meant for small problems. What it proves and what not: docs/GPU.md.
"""

import ctypes
import importlib.util
from typing import Optional

import numpy as np
import torch

from immiscible_ops import _checks

_GROUPS = {"block": 0, "grid": 1}  # the host launcher's codes for _checks.HOST_GROUPS
_library = None


def _load():
    global _library
    if _library is not None:
        return _library
    spec = importlib.util.find_spec("immiscible_ops._auction_host")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "immiscible_ops._auction_host is not built: it is compiled with the package "
            "(pip install ., or `python setup.py build_ext --inplace` in a checkout); it needs "
            "a C++20 compiler (g++ >= 11 or clang >= 15)")
    lib = ctypes.CDLL(spec.origin)
    i32, i64, f32 = ctypes.c_int, ctypes.c_int64, ctypes.c_float
    ptr = ctypes.c_void_p
    lib.immiscible_auction_on_host.argtypes = [ptr, i64, i64, i64, i32, i32, i32, f32, i32, ptr,
                                               ptr, ptr]
    lib.immiscible_auction_on_host.restype = i32
    for name, args, res in [
        ("immiscible_launch_state_bytes", [i64], i64),
        ("immiscible_launch_state_layout_end", [i64], i64),
        ("immiscible_launch_block_threads", [i64], i32),
        ("immiscible_launch_state_in_smem", [i64], i32),
        ("immiscible_launch_parse_mode", [ctypes.c_char_p], i32),
        ("immiscible_launch_choose_mode", [i32, i64, i64, i32, i32], i32),
        ("immiscible_launch_grid_blocks", [i32, i32], i32),
        ("immiscible_launch_max_rounds", [i64], i32),
        ("immiscible_launch_grid_falls_back", [i32], i32),
    ]:
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    _library = lib
    return lib


def auction_on_host(cost: torch.Tensor, *, group: str = "block", threads: int = 64,
                    blocks: int = 2, tol: Optional[float] = None, exact: bool = False,
                    return_rounds: bool = False):
    """cost [B, N, M] or [N, M] float32 (N <= M) -> (row_to_col int64 [B, N], status int32 [B]),
    the contract of linear_assignment(..., solver="auction") on CUDA (status 0 ok, 1 infeasible,
    2 NaN, 3 -inf; rows -1 unless ok), computed by the CUDA kernel's source on CPU threads.

    group: "block" (one block of `threads` per problem, `blocks` resident at once) or "grid"
    (`blocks` blocks of `threads` cooperate on each problem). tol: absolute bound on the excess
    over the optimum (default 1e-6 of the total; exact on integer costs); exact=True is
    solver="exact" on CUDA. return_rounds=True adds int32 [B, 2]: bidding rounds (forward,
    reverse) each problem took, summed over its phases.
    """
    _checks.check_auction_on_host(cost, group, threads, blocks, tol)
    if cost.dim() == 2:
        cost = cost.unsqueeze(0)
    problems, n, m = cost.shape

    lib = _load()
    c = np.ascontiguousarray(cost.detach().cpu().numpy())
    row_to_col = np.full((problems, n), -1, dtype=np.int64)
    status = np.zeros(problems, dtype=np.int32)
    rounds = np.zeros((problems, 2), dtype=np.int32)
    rc = lib.immiscible_auction_on_host(
        c.ctypes.data, problems, n, m, _GROUPS[group], threads, blocks,
        -1.0 if tol is None else float(tol), int(bool(exact)), row_to_col.ctypes.data,
        status.ctypes.data, rounds.ctypes.data)
    if rc != 0:
        raise RuntimeError("auction_on_host: the host launcher rejected its arguments")
    out = (torch.from_numpy(row_to_col), torch.from_numpy(status))
    return out + (torch.from_numpy(rounds),) if return_rounds else out


def launch_config():
    """The CUDA launcher's decisions (csrc/cuda/launch_config.h), as ctypes functions, for tests."""
    return _load()
