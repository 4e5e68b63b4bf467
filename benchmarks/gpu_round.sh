#!/usr/bin/env bash
# One GPU round on a machine with no network: install (carried wheel, else build from source),
# run the whole test suite including the CUDA tests, compute-sanitizer on small cases, and the
# GPU benchmarks. Logs, JSON and a markdown summary go to $OUT (default ./gpu_round_out).
#
#   bash benchmarks/gpu_round.sh                 # everything
#   STAGES="install test bench" bash benchmarks/gpu_round.sh
#
# Carry a wheel built on a CPU machine with nvcc:
#   IMMISCIBLE_BUILD_CUDA=1 pip wheel --no-build-isolation --no-deps . -w wheelhouse
# Each stage has its own time limit (seconds): T_BUILD, T_TEST, T_SANITIZE, T_BENCH.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/gpu_round_out}"
PY="${PYTHON:-python3}"
STAGES="${STAGES:-install test sanitize bench}"
WORK="$(mktemp -d /tmp/immiscible_round.XXXXXX)"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }

note "# GPU round $(date -u +%Y-%m-%dT%H:%M:%SZ)"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"
  command -v nvcc >/dev/null && nvcc --version | tail -1
} 2>&1 | tee "$OUT/env.txt" | sed 's/^/    /' >>"$SUMMARY"

# ---- install: the carried wheel into a private target, else an in-place build -------------------
if want install; then
  wheel=$(ls "$REPO"/wheelhouse/immiscible_ops-*.whl 2>/dev/null | tail -1)
  if [[ -n "$wheel" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$wheel" \
      >"$OUT/build.log" 2>&1
    rc=$?
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    note "install: wheel $(basename "$wheel") rc=$rc"
  else
    (cd "$REPO" && IMMISCIBLE_BUILD_CUDA=1 IMMISCIBLE_CUDA_ARCHS="${IMMISCIBLE_CUDA_ARCHS:-90}" \
      timeout "${T_BUILD:-480}" "$PY" setup.py build_ext --inplace) >"$OUT/build.log" 2>&1
    rc=$?
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    note "install: built from source rc=$rc (tail of build.log below on failure)"
    [[ $rc -ne 0 ]] && tail -20 "$OUT/build.log" | sed 's/^/    /' >>"$SUMMARY"
  fi
  # Run from a scratch folder so `import immiscible_ops` finds the installed package, not the tree.
  "$PY" -c "import immiscible_ops as m; print('immiscible_ops from', m.__file__, 'cuda kernels', m.HAS_CUDA_KERNELS)" \
    2>&1 | tee -a "$SUMMARY"
fi
cp -r "$REPO/tests" "$WORK/tests"
[[ -f "$REPO/pyproject.toml" ]] && cp "$REPO/pyproject.toml" "$WORK/"
cd "$WORK"

# ---- test: the whole suite, CUDA tests included ------------------------------------------------
if want test; then
  timeout "${T_TEST:-420}" "$PY" -m pytest -q -rs -p no:cacheprovider tests \
    >"$OUT/pytest.log" 2>&1
  rc=$?
  note "test: rc=$rc  $(tail -1 "$OUT/pytest.log")"
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20 | sed 's/^/    /' >>"$SUMMARY"
fi

# ---- sanitize: memcheck and racecheck on small cases of both regimes ---------------------------
if want sanitize; then
  cat >"$WORK/sanitize_case.py" <<'EOF'
import os, torch, immiscible_ops
torch.manual_seed(0)
for regime in ("block", "grid"):
    os.environ["IMMISCIBLE_CUDA_AUCTION"] = regime
    for shape in [(3, 17, 23), (1, 64, 64), (2, 40, 40)]:
        cost = torch.rand(*shape, device="cuda")
        cost[0, 0, :5] = float("inf")
        rows, status = torch.ops.immiscible.solve_batched(cost, "auto", -1.0)
        torch.cuda.synchronize()
    x = torch.randn(50, 128, device="cuda")
    immiscible_ops.assign(x, torch.randn(60, 128, device="cuda"), validate=False)
    torch.cuda.synchronize()
print("sanitize case done")
EOF
  : >"$OUT/sanitizer.log"
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      echo "=== $tool" >>"$OUT/sanitizer.log"
      timeout "${T_SANITIZE:-240}" compute-sanitizer --tool "$tool" --error-exitcode 9 \
        --target-processes all "$PY" "$WORK/sanitize_case.py" >>"$OUT/sanitizer.log" 2>&1
      rc=$?
      note "sanitize $tool: rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1)"
    done
  else
    note "sanitize: compute-sanitizer not found"
  fi
fi

# ---- bench -------------------------------------------------------------------------------------
if want bench; then
  timeout "${T_BENCH:-420}" "$PY" "$REPO/benchmarks/bench_gpu.py" --check \
    --json "$OUT/bench.json" --markdown "$OUT/bench.md" >"$OUT/bench.log" 2>&1
  rc=$?
  note "bench: rc=$rc"
  if [[ -s "$OUT/bench.md" ]]; then cat "$OUT/bench.md" >>"$SUMMARY"; else tail -20 "$OUT/bench.log" >>"$SUMMARY"; fi
fi

echo
cat "$SUMMARY"
