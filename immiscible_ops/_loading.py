"""Loads the compiled operator modules: the C++ one always, the CUDA one when torch has CUDA."""

import ctypes
import importlib
import os
import warnings
from pathlib import Path
from typing import Optional

import torch

# The CUDA module links the CUDA runtime statically. A runtime of CUDA major version R runs on
# any driver whose own CUDA version has major >= R (NVIDIA's minor version compatibility); the
# first Linux driver of each major (CUDA 12.0 GA, 13.0 GA in NVIDIA's release notes) names the
# driver to install.
FIRST_LINUX_DRIVER = {12: "525.60.13", 13: "580.65.06"}

# Operators with a C++ CUDA kernel in _C_cuda (csrc/cuda/): blocked when the driver is too old.
CUDA_KERNEL_OPS = ("solve_batched",)


def _version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def cuda_driver_problem(runtime_version: int, driver_version: int) -> Optional[str]:
    """None if a driver of CUDA version `driver_version` runs kernels linked against runtime
    `runtime_version` (both as CUDA encodes them, 13000 = 13.0; driver 0 = no driver, nothing
    to run on); else the message that names both, the driver to install and the other remedy."""
    if driver_version <= 0 or driver_version // 1000 >= runtime_version // 1000:
        return None
    major = runtime_version // 1000
    first = FIRST_LINUX_DRIVER.get(major)
    needed = f"an NVIDIA driver for CUDA {major}.x" + (f" (Linux {first} or newer)" if first else "")
    return (
        f"immiscible_ops: the CUDA kernels of this build use the CUDA {_version_text(runtime_version)} "
        f"runtime, which needs {needed}; the installed driver supports CUDA "
        f"{_version_text(driver_version)} only. The CUDA solver (linear_assignment, assign and "
        "immiscible_noise on CUDA tensors) raises this error instead of running; CPU tensors and "
        "the Triton distance kernel are unaffected. Remedy: update the NVIDIA driver, or build "
        "from source against a CUDA toolkit your driver supports: IMMISCIBLE_BUILD_CUDA=1 "
        "CUDA_HOME=/path/to/that/cuda pip install --no-build-isolation --no-binary immiscible_ops "
        "immiscible_ops (see the README's install section)."
    )


_blocking_library = None  # keeps the raising CUDA kernels registered


def _block_cuda_kernels(message: str) -> None:
    """Replaces the C++ CUDA kernels with ones that raise `message`, so that the first CUDA call
    fails with it instead of with a bare CUDA error from deep inside the solver."""
    global _blocking_library

    def raise_driver_error(*args, **kwargs):
        raise RuntimeError(message)

    library = torch.library.Library("immiscible", "IMPL")
    with warnings.catch_warnings():  # "Overriding a previously registered kernel": intended
        warnings.simplefilter("ignore")
        for op in CUDA_KERNEL_OPS:
            library.impl(op, raise_driver_error, "CUDA")
    _blocking_library = library


def _expose_torch_cuda_symbols() -> None:
    """Makes libtorch_cuda's symbols visible to the CUDA module before it is imported.

    _C_cuda calls the stable C shim aoti_torch_get_current_cuda_stream, which lives in
    libtorch_cuda.so. The module cannot name that library as NEEDED (wheels are built against a
    CPU torch, which has none), and torch loads it with RTLD_LOCAL, so without this the import
    fails with "undefined symbol". Re-opening the already loaded library with RTLD_GLOBAL
    publishes its symbols; it loads nothing new."""
    library = Path(torch.__file__).parent / "lib" / "libtorch_cuda.so"
    if library.exists():
        ctypes.CDLL(str(library), mode=os.RTLD_GLOBAL)


def load_extensions() -> bool:
    """Imports `_C` (required) and `_C_cuda` (when torch is a CUDA build); True if CUDA loaded
    and the driver can run it."""
    importlib.import_module("immiscible_ops._C")
    if torch.version.cuda is None:
        return False
    try:
        _expose_torch_cuda_symbols()
        cuda_module = importlib.import_module("immiscible_ops._C_cuda")
    except (ImportError, OSError) as error:
        warnings.warn(
            f"immiscible_ops: CUDA kernels unavailable ({error}); CUDA tensors will fail. "
            "Rebuild with nvcc on PATH or CUDA_HOME set.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    problem = cuda_driver_problem(*cuda_module.cuda_versions())
    if problem is not None:
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        _block_cuda_kernels(problem)
        return False
    return True
