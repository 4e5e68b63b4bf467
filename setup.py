"""Build of immiscible_ops: a C++ module always, a CUDA module whenever nvcc is present.

Both modules target PyTorch's stable ABI and CPython's limited API, so one abi3 wheel serves
every CPython >= 3.10 and torch >= 2.10.

Environment switches:
  IMMISCIBLE_BUILD_CUDA=0|1   force the CUDA module off/on (default: on when nvcc is found)
  IMMISCIBLE_CUDA_ARCHS       e.g. "80;90" (default), passed to nvcc as -gencode flags
  IMMISCIBLE_CUDA_MIN_BLOCKS  e.g. 1: the auction kernels' __launch_bounds__(512, N) instead of
                              (512) (registers vs resident blocks, docs/GPU.md "Resources")
  CUDA_HOME                   CUDA toolkit root (default: /usr/local/cuda, else above `which nvcc`)
  IMMISCIBLE_DEBUG=1          -O0 -g builds
"""

import os
import re
import shutil
from pathlib import Path

from setuptools import Extension, setup
from torch.utils import cpp_extension
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = Path(__file__).parent
DEBUG = os.environ.get("IMMISCIBLE_DEBUG") == "1"
# torch 2.10 is the oldest release whose stable ABI has everything the kernels use.
TORCH_TARGET = "-DTORCH_TARGET_VERSION=0x020a000000000000"


def find_cuda_home():
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:  # nvcc on PATH may be a wrapper script; its resolved parent is only a last guess
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for home in filter(None, candidates):
        if Path(home, "bin", "nvcc").exists() and Path(home, "include", "cuda_runtime.h").exists():
            return home
    return None


def want_cuda(cuda_home):
    switch = os.environ.get("IMMISCIBLE_BUILD_CUDA")
    if switch is not None:
        if switch == "1" and cuda_home is None:
            raise RuntimeError("IMMISCIBLE_BUILD_CUDA=1 but no nvcc was found; set CUDA_HOME")
        return switch == "1"
    return cuda_home is not None


def sources(folder, suffix):
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).glob(f"*{suffix}"))


# manylinux_2_28 (glibc 2.28) although built on a newer glibc: GLIBC_COMPAT (both modules) keeps
# libstdc++'s inline code off a glibc 2.32 symbol; GLIBC_CUDA_RUNTIME pins the static CUDA
# runtime's glibc calls to their pre-2.34 symbol versions, each name it lists routed there with
# -Wl,--wrap=NAME. Two files, not one with an #ifdef: both extensions share one build folder.
GLIBC_COMPAT = "csrc/compat/glibc_compat.cpp"
GLIBC_CUDA_RUNTIME = "csrc/compat/glibc_cuda_runtime.cpp"
GLIBC_WRAPPED = re.findall(r"^IMMISCIBLE_GLIBC_COMPAT\((\w+),",
                           (ROOT / GLIBC_CUDA_RUNTIME).read_text(), re.M)
# Hides the static libraries' symbols (the CUDA runtime's cuda* API) from the module's exports.
HIDE_STATIC = ["-Wl,--exclude-libs,ALL"]


cxx_flags = ["-O0", "-g"] if DEBUG else ["-O3"]
# py_limited_api=True below defines Py_LIMITED_API (3.10) for every source.
cxx_flags += ["-std=c++17", "-fvisibility=hidden", TORCH_TARGET]

extensions = [
    CppExtension(
        "immiscible_ops._C",
        ["csrc/module.cpp", "csrc/ops.cpp", GLIBC_COMPAT] + sources("csrc/cpu", ".cpp"),
        include_dirs=[str(ROOT / "csrc")],
        depends=sources("csrc/cpu", ".h"),
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=HIDE_STATIC,
        py_limited_api=True,
    )
]

# The CUDA auction's own source run on the host (csrc/host_emulation/): tests and audits of the
# GPU algorithm without a GPU. Plain C++20 (std::barrier), no torch API.
extensions.append(
    Extension(
        "immiscible_ops._auction_host",
        ["csrc/host_emulation/module.cpp", "csrc/host_emulation/auction_host.cpp", GLIBC_COMPAT],
        include_dirs=[str(ROOT / "csrc")],
        depends=sources("csrc/host_emulation", ".h") + ["csrc/cuda/auction.cuh", "csrc/cuda/launch_config.h"],
        extra_compile_args=["-O2", "-std=c++20", "-pthread", "-fvisibility=hidden", "-Wno-unknown-pragmas"],
        extra_link_args=["-pthread"],
        py_limited_api=True,
    )
)

cuda_home = find_cuda_home()
if want_cuda(cuda_home):
    # CPU-only torch leaves cpp_extension.CUDA_HOME unset; BuildExtension needs it to drive nvcc.
    cpp_extension.CUDA_HOME = cuda_home
    archs = os.environ.get("IMMISCIBLE_CUDA_ARCHS", "80;90").split(";")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    nvcc_flags = ["-O0", "-G"] if DEBUG else ["-O3", "-lineinfo"]
    nvcc_flags += ["-std=c++17", "--expt-relaxed-constexpr", "-DUSE_CUDA", TORCH_TARGET,
                   "-Xcompiler=-fvisibility=hidden"] + gencode
    min_blocks = os.environ.get("IMMISCIBLE_CUDA_MIN_BLOCKS", "")
    if min_blocks:
        if not min_blocks.isdigit():
            raise ValueError(f"IMMISCIBLE_CUDA_MIN_BLOCKS: expected a block count, got {min_blocks!r}")
        nvcc_flags.append(f"-DIMMISCIBLE_AUCTION_MIN_BLOCKS={min_blocks}")
    # A plain CppExtension (not CUDAExtension): CUDAExtension links c10_cuda/torch_cuda, which
    # CPU-only torch does not ship. The module needs only the static CUDA runtime.
    extensions.append(
        CppExtension(
            "immiscible_ops._C_cuda",
            ["csrc/module_cuda.cpp", GLIBC_COMPAT, GLIBC_CUDA_RUNTIME] + sources("csrc/cuda", ".cu"),
            include_dirs=[str(ROOT / "csrc"), str(Path(cuda_home, "include"))],
            depends=sources("csrc/cuda", ".cuh"),
            library_dirs=[str(Path(cuda_home, "lib64"))],
            libraries=["cudart_static", "rt", "dl", "pthread"],
            extra_compile_args={"cxx": cxx_flags + ["-DUSE_CUDA", "-DIMMISCIBLE_SASS_ARCHS="
                                                    + ",".join(re.sub(r"\D", "", a) for a in archs if a)],
                                "nvcc": nvcc_flags},
            # On glibc < 2.34 the pinned functions live in these three libraries, not libc.so.6:
            # they are named as NEEDED even though this glibc's copies are empty stubs.
            extra_link_args=HIDE_STATIC + [f"-Wl,--wrap={name}" for name in GLIBC_WRAPPED] + [
                "-Wl,--no-as-needed", "-l:libpthread.so.0", "-l:libdl.so.2", "-l:librt.so.1",
                "-Wl,--as-needed"],
            py_limited_api=True,
        )
    )

setup(
    ext_modules=extensions,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
