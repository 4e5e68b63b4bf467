#!/usr/bin/env python3
"""Checks that the compiled modules of a wheel (or .so files) link only what a wheel may:

  * from torch, only the stable C ABI: unversioned imports named aoti_torch_* or torch_*
    (no mangled torch/c10/ATen C++ symbol, which would tie the wheel to one torch release);
  * from CPython, only Py*/_Py* (the limited API, the wheel is abi3);
  * C++ standard library names (std::...);
  * everything else from glibc, libstdc++ and libgcc by symbol version, glibc no newer than
    MAX_GLIBC (the manylinux_2_28 tag);
  * NEEDED libraries from ALLOWED_NEEDED only: no libcudart (the CUDA runtime is linked
    statically), no libtorch_python, no libcuda (the runtime dlopens the driver).

    python .ci/check_abi.py dist/immiscible_ops-*.whl [more wheels or .so files]

Exits 1 listing every offending symbol or library by name. Needs binutils (nm, readelf).
"""

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MAX_GLIBC = (2, 28)
ALLOWED_NEEDED = {
    # torch's libraries hold the stable C shims (aoti_torch_*, torch_*).
    "libc10.so", "libtorch_cpu.so", "libtorch.so",
    # C and C++ runtime.
    "libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
    # Where glibc < 2.34 keeps dlopen, pthread_*, shm_* (csrc/compat/glibc_compat.cpp).
    "libpthread.so.0", "libdl.so.2", "librt.so.1",
}
# Mangled names in these namespaces belong to torch's C++ API, which has no stable ABI.
TORCH_CXX_NAMESPACES = ("3c10", "2at", "5torch", "6caffe2", "5aoti")
STABLE_TORCH_PREFIXES = ("aoti_torch_", "torch_")
PYTHON_PREFIXES = ("Py", "_Py")
# The C++ standard library's own names (std::, its vtables and type infos). They come unversioned
# where the linker found a copy in libc10/libtorch before libstdc++ (torch exports some template
# instantiations); at run time an unversioned import binds to any provider, libstdc++ included.
STD_PREFIXES = ("_ZNSt", "_ZNKSt", "_ZSt", "_ZTVSt", "_ZTISt", "_ZTSSt", "_ZTVN10__cxxabiv")
VERSIONED_LIBRARIES = ("GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_")
# Weak hooks every gcc-built shared object declares; they are never required.
WEAK_HOOKS = {"__gmon_start__", "_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable"}


def undefined_symbols(so: Path) -> list[tuple[str, str, str]]:
    """(name, version or '', nm type letter) of each undefined dynamic symbol."""
    out = subprocess.run(["nm", "-D", "--undefined-only", "--with-symbol-versions", str(so)],
                         check=True, capture_output=True, text=True).stdout
    symbols = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        kind, full = parts[-2], parts[-1]
        name, _, version = full.partition("@")
        symbols.append((name, version.lstrip("@"), kind))
    return symbols


def needed_libraries(so: Path) -> list[str]:
    out = subprocess.run(["readelf", "-d", str(so)], check=True, capture_output=True,
                         text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def symbol_problem(name: str, version: str, kind: str) -> str | None:
    """Why an undefined symbol is not allowed, or None."""
    if name.startswith("_Z") and any(ns in name for ns in TORCH_CXX_NAMESPACES):
        return "torch/c10 C++ symbol (not in the stable ABI)"
    if version:
        if not version.startswith(VERSIONED_LIBRARIES):
            return f"symbol version {version} is not glibc/libstdc++/libgcc"
        if version.startswith("GLIBC_"):
            numbers = tuple(int(x) for x in version[len("GLIBC_"):].split("."))
            if numbers[:2] > MAX_GLIBC:
                return f"needs glibc {version}, newer than manylinux_{MAX_GLIBC[0]}_{MAX_GLIBC[1]}"
        return None
    if name.startswith(STABLE_TORCH_PREFIXES + PYTHON_PREFIXES + STD_PREFIXES):
        return None
    if name in WEAK_HOOKS and kind in "wv":
        return None
    return "unversioned import that is neither a torch C shim nor the Python C API"


def check_library(so: Path, label: str) -> list[str]:
    problems = []
    for lib in needed_libraries(so):
        if lib not in ALLOWED_NEEDED:
            problems.append(f"{label}: NEEDED {lib} is not allowed"
                            + (" (the CUDA runtime must be linked statically)"
                               if lib.startswith("libcudart") else ""))
    for name, version, kind in undefined_symbols(so):
        problem = symbol_problem(name, version, kind)
        if problem:
            problems.append(f"{label}: {name}{'@' + version if version else ''}: {problem}")
    return problems


def check_paths(paths: list[str]) -> tuple[list[str], list[str]]:
    """(checked .so labels, problems) for wheels and .so files."""
    checked, problems = [], []
    for path in map(Path, paths):
        if path.suffix == ".whl":
            with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as wheel:
                for member in wheel.namelist():
                    if member.endswith(".so") or ".so." in member:
                        so = Path(wheel.extract(member, tmp))
                        label = f"{path.name}:{member}"
                        checked.append(label)
                        problems += check_library(so, label)
        else:
            checked.append(str(path))
            problems += check_library(path, str(path))
    return checked, problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    checked, problems = check_paths(argv)
    if not checked:
        print("check_abi: no shared library found in", " ".join(argv), file=sys.stderr)
        return 1
    for label in checked:
        print("check_abi: checked", label)
    for problem in problems:
        print("check_abi: FAIL", problem)
    if problems:
        return 1
    print(f"check_abi: OK, {len(checked)} modules: stable torch C ABI, limited Python API, "
          f"glibc <= {MAX_GLIBC[0]}.{MAX_GLIBC[1]}, no dynamic CUDA runtime")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
