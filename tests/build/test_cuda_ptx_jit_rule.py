"""The loader's rule for GPUs that run the embedded PTX (no compiled code for them in the build):
the driver JIT-compiles that PTX and must be at least as new as the CUDA runtime that wrote it,
minor version included; compiled code only needs the same major version."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import immiscible_ops
from immiscible_ops import _loading
from immiscible_ops._loading import cuda_driver_problem, runs_compiled_code

BUILD = (80, 90)  # setup.py's default IMMISCIBLE_CUDA_ARCHS


@pytest.mark.parametrize("capability,compiled", [
    ((8, 0), True), ((8, 6), True), ((8, 9), True),  # sm_80 code runs on every 8.x from 8.0
    ((9, 0), True),
    ((7, 5), False),  # older than every target: no code at all (CUDA's "no kernel image")
    ((10, 0), False), ((12, 0), False),  # newer: the compute_90 PTX, JIT-compiled
])
def test_which_gpus_run_compiled_code(capability, compiled):
    assert runs_compiled_code(capability, BUILD) is compiled


@pytest.mark.parametrize("capability", [(10, 0), (12, 0)])
def test_ptx_jit_needs_the_runtimes_minor_version(capability):
    # A wheel built with CUDA 13.2 on a 13.0 driver: fine for compiled code, not for the PTX.
    message = cuda_driver_problem(13020, 13000, capability, BUILD)
    assert message is not None
    sm = f"sm_{capability[0]}{capability[1]}"
    assert sm in message and "CUDA 13.2" in message and "CUDA 13.0" in message
    assert f"IMMISCIBLE_CUDA_ARCHS={capability[0]}{capability[1]}" in message
    assert cuda_driver_problem(13020, 13020, capability, BUILD) is None
    assert cuda_driver_problem(13020, 13050, capability, BUILD) is None


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0)])
def test_compiled_code_keeps_minor_version_compatibility(capability):
    assert cuda_driver_problem(13020, 13000, capability, BUILD) is None


def test_device_independent_check_is_unchanged():
    assert cuda_driver_problem(13020, 13000) is None  # no device given: the major rule only
    assert "CUDA 13.0" in cuda_driver_problem(13000, 12080, (12, 0), BUILD)


def test_first_use_on_a_jit_gpu_raises_the_message(monkeypatch):
    monkeypatch.setattr(_loading, "_cuda_build", (13020, 13000, BUILD))
    monkeypatch.setattr(_loading, "_checked_devices", {})
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda index: asked.append(index) or ((12, 0) if index == 1 else (9, 0)))
    _loading.check_cuda_device(torch.device("cuda", 0))  # sm_90: compiled code, no problem
    with pytest.raises(RuntimeError, match="sm_120 has no compiled code|this GPU \\(sm_120\\)"):
        _loading.check_cuda_device(torch.device("cuda", 1))
    with pytest.raises(RuntimeError, match="CUDA 13.2"):
        _loading.check_cuda_device(torch.device("cuda", 1))
    assert asked == [0, 1]  # asked once per device, then cached


CUDA_MODULE = next(Path(immiscible_ops.__file__).parent.glob("_C_cuda*.so"), None)


@pytest.mark.skipif(CUDA_MODULE is None, reason="CUDA module not built")
def test_cuda_module_reports_its_compiled_architectures():
    # Loaded by its init function (a CPU torch cannot import it: see test_cuda_driver_check).
    code = ("import ctypes, os, torch\n"
            f"lib = ctypes.CDLL({str(CUDA_MODULE)!r}, mode=os.RTLD_LAZY | os.RTLD_LOCAL)\n"
            "module = ctypes.PYFUNCTYPE(ctypes.py_object)(('PyInit__C_cuda', lib))()\n"
            "print(*module.sass_archs())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    archs = [int(a) for a in result.stdout.split()]
    assert archs and all(70 <= a < 200 for a in archs)
