"""The built wheel, as users get it: its tag, its files, and that the tests import it from
site-packages. Runs when IMMISCIBLE_WHEEL names the wheel (.ci/wheel_check.sh sets it), is
skipped otherwise. IMMISCIBLE_SOURCE_ROOT, when set, is the checkout it was built from."""

import os
import re
import sysconfig
import zipfile
from pathlib import Path

import pytest

WHEEL = os.environ.get("IMMISCIBLE_WHEEL")
SOURCE_ROOT = os.environ.get("IMMISCIBLE_SOURCE_ROOT")
# IMMISCIBLE_WHEEL_CPU_ONLY=1: a wheel built without nvcc (no _C_cuda module).
CPU_ONLY = os.environ.get("IMMISCIBLE_WHEEL_CPU_ONLY") == "1"
TAG = "cp310-abi3-manylinux_2_28_x86_64"

pytestmark = pytest.mark.skipif(not WHEEL, reason="set IMMISCIBLE_WHEEL=path/to/the.whl")


@pytest.fixture(scope="module")
def names():
    with zipfile.ZipFile(WHEEL) as wheel:  # files only (auditwheel adds folder entries)
        return [n for n in wheel.namelist() if not n.endswith("/")]


@pytest.fixture(scope="module")
def wheel_metadata():
    with zipfile.ZipFile(WHEEL) as wheel:
        info = next(n for n in wheel.namelist() if n.endswith(".dist-info/WHEEL"))
        return wheel.read(info).decode()


def test_file_name_and_wheel_metadata_carry_the_one_tag():
    assert Path(WHEEL).name == f"immiscible_ops-0.1.0-{TAG}.whl"


def test_wheel_metadata_tag(wheel_metadata):
    assert re.findall(r"^Tag: (.+)$", wheel_metadata, re.M) == [TAG]
    assert "Root-Is-Purelib: false" in wheel_metadata


def test_compiled_modules_present(names):
    modules = {n for n in names if n.endswith(".so")}
    assert "immiscible_ops/_C.abi3.so" in modules
    if not CPU_ONLY:
        assert "immiscible_ops/_C_cuda.abi3.so" in modules
    # abi3 everywhere: a module tagged for one CPython would break the cp310-abi3 promise.
    assert all(n.endswith(".abi3.so") and n.startswith("immiscible_ops/") for n in modules), modules


def test_nothing_vendored(names):
    # auditwheel grafts libraries it may not exclude into immiscible_ops.libs/; torch's, the
    # driver and the (static) CUDA runtime must never land there.
    assert not [n for n in names if ".libs/" in n], names


def test_python_sources_and_package_data_present(names):
    for required in ["immiscible_ops/__init__.py", "immiscible_ops/_loading.py",
                     "immiscible_ops/ops.py", "immiscible_ops/triton_distance.py",
                     "immiscible_ops/knn.py", "immiscible_ops/triton_knn.py", "immiscible_ops/train/__init__.py",
                     "immiscible_ops/train/__main__.py"]:
        assert required in names
    if SOURCE_ROOT:  # every .py and package-data file of the source package, no more, no less
        package = Path(SOURCE_ROOT, "immiscible_ops")
        expected = {str(p.relative_to(SOURCE_ROOT)) for p in package.rglob("*")
                    if p.suffix in (".py", ".json") and "__pycache__" not in p.parts}
        shipped = {n for n in names if n.startswith("immiscible_ops/") and not n.endswith(".so")}
        assert shipped == expected


def test_entry_points(names):
    with zipfile.ZipFile(WHEEL) as wheel:
        entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "immiscible-bench = immiscible_ops.bench:main" in entry_points
    assert "immiscible-train = immiscible_ops.train.cli:main" in entry_points


def test_no_build_artefacts_tests_or_caches(names):
    forbidden = re.compile(r"(^|/)(build|tests?|__pycache__|\.pytest_cache|\.hypothesis|"
                           r"[^/]*\.egg-info)/|\.(o|a|pyc|pyo|cu|cuh|cpp|h|ninja_deps)$|"
                           r"(^|/)(\.ninja_log|build\.ninja)$")
    assert not [n for n in names if forbidden.search(n)]
    top_level = {n.split("/")[0] for n in names}
    assert top_level == {"immiscible_ops", "immiscible_ops-0.1.0.dist-info"}, top_level


def test_tests_import_the_installed_wheel_not_the_source_tree():
    import immiscible_ops

    installed = Path(immiscible_ops.__file__).resolve()
    site_dirs = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    assert any(site in installed.parents for site in site_dirs), installed
    if SOURCE_ROOT:
        assert Path(SOURCE_ROOT).resolve() not in installed.parents
    # Not an editable install either: the modules sit beside the package's own files.
    assert (installed.parent / "_C.abi3.so").exists()
