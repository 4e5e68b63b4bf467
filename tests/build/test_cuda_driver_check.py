"""The driver check of immiscible_ops._loading, on the CPU: the version -> message logic, the
kernels that replace the CUDA solver when the driver is too old, and the CUDA module's
version query (which runs the static CUDA runtime's driver lookup, no GPU needed)."""

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

import immiscible_ops
from immiscible_ops._loading import FIRST_LINUX_DRIVER, cuda_driver_problem


@pytest.mark.parametrize("runtime, driver", [
    (13000, 13000),  # same version
    (13000, 13020),  # newer minor: minor version compatibility
    (13020, 13000),  # older minor of the same major: minor version compatibility too
    (13000, 14000),  # newer major
    (12080, 12040),
    (13000, 0),      # no driver at all: nothing to run on, torch reports no device
])
def test_driver_that_runs_the_runtime_gives_no_message(runtime, driver):
    assert cuda_driver_problem(runtime, driver) is None


@pytest.mark.parametrize("runtime, driver, runtime_text, driver_text", [
    (13000, 12080, "CUDA 13.0", "CUDA 12.8"),
    (13000, 12040, "CUDA 13.0", "CUDA 12.4"),
    (12040, 11080, "CUDA 12.4", "CUDA 11.8"),
])
def test_older_driver_names_both_versions_the_driver_and_the_remedy(runtime, driver,
                                                                   runtime_text, driver_text):
    message = cuda_driver_problem(runtime, driver)
    assert message is not None
    assert runtime_text in message and driver_text in message
    assert FIRST_LINUX_DRIVER[runtime // 1000] in message  # the driver to install
    assert "IMMISCIBLE_BUILD_CUDA=1" in message and "--no-build-isolation" in message


def test_unknown_major_still_gives_a_message():
    message = cuda_driver_problem(14000, 13000)
    assert message is not None and "CUDA 14.x" in message and "CUDA 13.0" in message


def run_python(code: str) -> subprocess.CompletedProcess:
    # A fresh interpreter: registering kernels changes the process-wide dispatcher. The parent's
    # sys.path is passed on so that the same immiscible_ops (in place or installed) is imported.
    env_path = ":".join(p for p in sys.path if p)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=300)


def test_blocked_cuda_solver_is_registered_for_the_cuda_key():
    result = run_python(
        "import torch, immiscible_ops\n"
        "from immiscible_ops._loading import _block_cuda_kernels, CUDA_KERNEL_OPS\n"
        "_block_cuda_kernels('driver too old')\n"
        "for op in CUDA_KERNEL_OPS:\n"
        "    assert torch._C._dispatch_has_kernel_for_dispatch_key('immiscible::' + op, 'CUDA')\n"
        "print('ok')\n")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


CUDA_MODULE = next(Path(immiscible_ops.__file__).parent.glob("_C_cuda*.so"), None)


@pytest.mark.skipif(CUDA_MODULE is None, reason="CUDA module not built")
def test_cuda_module_reports_its_runtime_and_the_driver():
    # With a CPU build of torch the module cannot be imported (the CUDA stream shim lives in
    # libtorch_cuda); loading it lazily and calling its init function directly still runs the
    # version query, i.e. the static CUDA runtime's dlopen of libcuda through the glibc pins.
    result = run_python(
        "import ctypes, os, torch\n"
        f"lib = ctypes.CDLL({str(CUDA_MODULE)!r}, mode=os.RTLD_LAZY | os.RTLD_LOCAL)\n"
        "module = ctypes.PYFUNCTYPE(ctypes.py_object)(('PyInit__C_cuda', lib))()\n"
        "runtime, driver = module.cuda_versions()\n"
        "print(runtime, driver)\n")
    assert result.returncode == 0, result.stderr
    runtime, driver = map(int, result.stdout.split())
    assert runtime >= 12000 and runtime % 10 == 0  # e.g. 13000 for CUDA 13.0
    # The driver's own answer, asked directly: 0 where no driver library can be loaded.
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        assert driver == 0
    else:
        version = ctypes.c_int(-1)
        assert libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0
        assert driver == version.value
