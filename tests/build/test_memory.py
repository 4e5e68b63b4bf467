"""No memory growth per call, for every compiled op (the CPU kernels and the host emulation).

A training loop calls these once per step, for days. The measure is glibc's count of bytes in
use (mallinfo2: heap plus mmapped blocks), not RSS: it moves by exactly what is allocated and
not freed, so a bound of a few bytes per call separates a leak from noise. The leak this guards
against: torch's TORCH_BOX never frees the std::string it makes of a `str` argument (48 bytes a
call, the `solver` of solve_batched), which is why kernels are registered through
IMMISCIBLE_BOX (csrc/stable_boxing.h); a plain torch op stays under 1 byte a call.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

LEAK_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import torch, immiscible_ops as io
    from immiscible_ops.testing import auction_on_host

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2

    def in_use():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def bytes_per_call(fn, calls):
        for _ in range(max(calls // 10, 5)):  # warm-up: caches, lazy registrations
            fn()
        before = in_use()
        for _ in range(calls):
            fn()
        return (in_use() - before) / calls

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cost = torch.rand(16, 32, 32)
    x, noise = torch.randn(16, 3, 8, 8), torch.randn(32, 3, 8, 8)
    small = torch.rand(1, 8, 8)
    ops = {
        "solve_batched exact": (lambda: torch.ops.immiscible.solve_batched(cost, "exact", 0.0), 20000),
        "solve_batched auction": (lambda: torch.ops.immiscible.solve_batched(cost, "auction", 0.0), 20000),
        "linear_assignment": (lambda: io.linear_assignment(cost), 20000),
        "assign": (lambda: io.assign(x, noise), 10000),
        "pairwise_distance": (lambda: io.pairwise_distance(x.flatten(1), noise.flatten(1)), 10000),
        "plain torch (control)": (lambda: torch.empty(16, 32, dtype=torch.long).fill_(1), 20000),
        # Each call starts 32 std::threads: far fewer calls, and a looser bound below.
        "auction_on_host block": (lambda: auction_on_host(small, threads=32, blocks=1), 40),
        "auction_on_host grid": (lambda: auction_on_host(small, group="grid", threads=32, blocks=1), 40),
    }
    print(json.dumps({name: bytes_per_call(fn, calls) for name, (fn, calls) in ops.items()}))
""")

# Bytes per call a kernel may add to the heap: a TORCH_BOX str argument leaks 48; the control
# measures < 1.
# The host emulation's 40 calls (threads come and go) measured 3-4 bytes/call of noise; what it
# could leak (its per-call state vectors) is hundreds of bytes.
BOUND = {"auction_on_host block": 64.0, "auction_on_host grid": 64.0}
DEFAULT_BOUND = 8.0


@pytest.fixture(scope="module")
def growth():
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None
    if not hasattr(libc, "mallinfo2"):  # glibc >= 2.33
        pytest.skip("needs glibc's mallinfo2")
    done = subprocess.run([sys.executable, "-c", LEAK_PROBE], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("op", [
    "solve_batched exact", "solve_batched auction", "linear_assignment", "assign",
    "pairwise_distance", "auction_on_host block", "auction_on_host grid", "plain torch (control)",
])
def test_no_memory_growth_per_call(growth, op):
    assert growth[op] < BOUND.get(op, DEFAULT_BOUND), f"{op}: heap grew {growth[op]:.1f} bytes per call ({growth})"


PROBE = """
#include "stable_boxing.h"
#include <string>
int64_t length(std::string s) { return static_cast<int64_t>(s.size()); }
auto boxed = BOX(&length);
"""


@pytest.mark.parametrize("box", ["IMMISCIBLE_BOX", "TORCH_BOX"])
def test_kernel_files_cannot_use_torch_box(tmp_path, box):
    """stable_boxing.h turns TORCH_BOX (which leaks every str argument) into a compile error in
    the files that register kernels; IMMISCIBLE_BOX compiles on the same kernel."""
    csrc = pathlib.Path(__file__).resolve().parents[2] / "csrc"
    compiler = shutil.which("g++") or shutil.which("c++")
    if not csrc.is_dir() or compiler is None:
        pytest.skip("needs a source checkout (csrc/) and a C++ compiler")
    from torch.utils.cpp_extension import include_paths

    source = tmp_path / "probe.cpp"
    source.write_text(PROBE.replace("BOX(", box + "("))
    cmd = [compiler, "-std=c++17", "-fsyntax-only", "-DTORCH_TARGET_VERSION=0x020a000000000000",
           f"-I{csrc}", *(f"-I{p}" for p in include_paths()),
           f"-I{sysconfig.get_paths()['include']}", str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if box == "IMMISCIBLE_BOX":
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0 and "use_IMMISCIBLE_BOX" in done.stderr
