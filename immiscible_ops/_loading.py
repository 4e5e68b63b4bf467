"""Loads the compiled operator modules: the C++ one always, the CUDA one when torch has CUDA."""

import ctypes
import importlib
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

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


def runs_compiled_code(capability: Tuple[int, int], sass_archs: Sequence[int]) -> bool:
    """True if a GPU of compute capability (major, minor) runs one of the module's compiled
    architectures (sm_XY code runs on sm_XZ for Z >= Y: sm_80 on 8.6 and 8.9); False when it can
    only JIT-compile the embedded PTX (sm_100 and sm_120 for an sm_80;90 build)."""
    major, minor = capability
    return any(a // 10 == major and a % 10 <= minor for a in sass_archs)


def cuda_driver_problem(runtime_version: int, driver_version: int,
                        capability: Optional[Tuple[int, int]] = None,
                        sass_archs: Sequence[int] = ()) -> Optional[str]:
    """None if a driver of CUDA version `driver_version` runs kernels linked against runtime
    `runtime_version` (both as CUDA encodes them, 13000 = 13.0; driver 0 = no driver, nothing
    to run on) on a GPU of `capability` given the module's compiled `sass_archs` (None: the
    device-independent part only); else the message that names the versions, the driver to
    install and the other remedy.

    Compiled code needs a driver of the runtime's major version (minor version compatibility).
    PTX is JIT-compiled by the driver, which must know the PTX ISA of the toolkit that wrote it:
    a driver at least as new as the runtime, minor version included."""
    if driver_version <= 0:
        return None
    same_major = driver_version // 1000 >= runtime_version // 1000
    if (same_major and capability is not None and driver_version < runtime_version
            and not runs_compiled_code(capability, sass_archs)):
        sm = f"sm_{capability[0]}{capability[1]}"
        built = ", ".join(f"sm_{a}" for a in sass_archs) or "none"
        return (
            f"immiscible_ops: this GPU ({sm}) has no compiled code in this build (compiled: "
            f"{built}), so the driver JIT-compiles the embedded PTX, which was written by CUDA "
            f"{_version_text(runtime_version)} and needs a driver for CUDA "
            f"{_version_text(runtime_version)} or newer; the installed driver supports CUDA "
            f"{_version_text(driver_version)}. The CUDA solver (linear_assignment, assign and "
            "immiscible_noise on CUDA tensors) raises this error instead of running. Remedy: "
            "update the NVIDIA driver, or build from source for this GPU: "
            f"IMMISCIBLE_CUDA_ARCHS={capability[0]}{capability[1]} IMMISCIBLE_BUILD_CUDA=1 pip "
            "install --no-build-isolation --no-binary immiscible_ops immiscible_ops."
        )
    if same_major:
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
    global _cuda_build
    runtime, driver = cuda_module.cuda_versions()
    # A module built before sass_archs() existed: the default build's architectures.
    archs = tuple(cuda_module.sass_archs()) if hasattr(cuda_module, "sass_archs") else (80, 90)
    problem = cuda_driver_problem(runtime, driver)
    if problem is not None:
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
        _block_cuda_kernels(problem)
        return False
    _cuda_build = (runtime, driver, archs)
    return True


_cuda_build: Optional[Tuple[int, int, Tuple[int, ...]]] = None  # (runtime, driver, SASS archs)
_checked_devices: Dict[int, Optional[str]] = {}


def check_cuda_device(device: torch.device) -> None:
    """Raises the PTX-JIT driver problem for `device` (once per device, cached), before the CUDA
    solver's first launch there would fail with CUDA's bare "unsupported PTX version". Asks the
    device at first use, not at import: importing the package makes no CUDA call."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _checked_devices:
        problem = None
        if _cuda_build is not None:
            runtime, driver, archs = _cuda_build
            problem = cuda_driver_problem(runtime, driver,
                                          torch.cuda.get_device_capability(index), archs)
        _checked_devices[index] = problem
    if _checked_devices[index] is not None:
        raise RuntimeError(_checked_devices[index])
