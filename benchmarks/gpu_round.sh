#!/usr/bin/env bash
# One GPU round on a machine with no network: install (carried wheel, else build from source),
# run the whole test suite including the CUDA tests, compute-sanitizer on small cases, and the
# GPU benchmarks. Logs, JSON and a markdown summary go to $OUT (default ./gpu_round_out).
#
#   bash benchmarks/gpu_round.sh                 # everything
#   STAGES="install test bench" bash benchmarks/gpu_round.sh
#   STAGES="install bounds" bash benchmarks/gpu_round.sh   # the auction's launch bounds only
#
# Carry a wheel built on a CPU machine with nvcc:
#   IMMISCIBLE_BUILD_CUDA=1 pip wheel --no-build-isolation --no-deps . -w wheelhouse
# Each stage has its own time limit (seconds): T_BUILD, T_TEST, T_SANITIZE, T_BENCH, T_BOUNDS.
# Stage "bounds" settles the auction kernels' __launch_bounds__ (docs/GPU.md "Resources"): the
# installed module ((512): 64 registers, spills, two blocks per SM) against a build with
# IMMISCIBLE_CUDA_MIN_BLOCKS=1 ((512, 1): up to 128 registers, no spills, one block per SM), the
# same solves timed side by side; a carried wheelhouse/min1/immiscible_ops-*.whl skips the build.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/gpu_round_out}"
PY="${PYTHON:-python3}"
STAGES="${STAGES:-install test sanitize bench bounds}"
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

# ---- bounds: __launch_bounds__(512) (installed) against (512, 1), the same solves ---------------
if want bounds; then
  MIN1="$WORK/min1"
  wheel1=$(ls "$REPO"/wheelhouse/min1/immiscible_ops-*.whl 2>/dev/null | tail -1)
  if [[ -n "$wheel1" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$MIN1" "$wheel1" \
      >>"$OUT/build.log" 2>&1
    rc=$?
  else
    # A copy of the sources: an in-place build in the tree would replace the module under test.
    mkdir -p "$MIN1"
    for f in setup.py pyproject.toml README.md csrc immiscible_ops; do
      [[ -e "$REPO/$f" ]] && cp -r "$REPO/$f" "$MIN1/"
    done
    find "$MIN1/immiscible_ops" -name '*.so' -delete
    (cd "$MIN1" && IMMISCIBLE_BUILD_CUDA=1 IMMISCIBLE_CUDA_MIN_BLOCKS=1 \
      IMMISCIBLE_CUDA_ARCHS="${IMMISCIBLE_CUDA_ARCHS:-90}" MAX_JOBS="${MAX_JOBS:-16}" \
      timeout "${T_BUILD:-480}" "$PY" setup.py build_ext --inplace) >>"$OUT/build.log" 2>&1
    rc=$?
  fi
  note "bounds: (512, 1) module rc=$rc"
  cat >"$WORK/bounds_case.py" <<'EOF'
import json, os, statistics, torch, immiscible_ops
# (regime, problems, n, m): block mode's many small problems (state in shared memory, then in
# global memory), grid mode's one large problem (B = 1024, the noise pool, B = 4096).
CASES = [("block", 256, 256, 256), ("block", 16, 1024, 1024), ("grid", 1, 1024, 1024),
         ("grid", 1, 1024, 4096), ("grid", 1, 4096, 4096)]
g = torch.Generator().manual_seed(0)
rows = []
for regime, p, n, m in CASES:
    os.environ["IMMISCIBLE_CUDA_AUCTION"] = regime
    cost = torch.cdist(0.5 * torch.randn(p, n, 64, generator=g), torch.randn(p, m, 64, generator=g)).cuda()
    times = []
    for i in range(13):  # 3 warm-up calls, median of 10
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        _, status = torch.ops.immiscible.solve_batched(cost, "auto", -1.0)
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end))
    assert int(status.max()) == 0, status
    rows.append({"regime": regime, "problems": p, "n": n, "m": m, "ms": statistics.median(times)})
print(json.dumps(rows))
EOF
  : >"$WORK/bounds.tsv"
  for variant in "(512)" "(512, 1)"; do
    pp="${PYTHONPATH:-}"
    [[ "$variant" == "(512, 1)" ]] && pp="$MIN1${PYTHONPATH:+:$PYTHONPATH}"
    echo "=== __launch_bounds__$variant" >>"$OUT/bench.log"
    PYTHONPATH="$pp" timeout "${T_BOUNDS:-300}" "$PY" "$WORK/bounds_case.py" \
      >"$WORK/bounds_out.txt" 2>>"$OUT/bench.log"
    rc=$?
    cat "$WORK/bounds_out.txt" >>"$OUT/bench.log"
    printf '%s\t%s\n' "$variant" "$(tail -1 "$WORK/bounds_out.txt")" >>"$WORK/bounds.tsv"
    note "bounds $variant: rc=$rc"
  done
  # Registers of the two modules that ran (cuobjdump: the toolkit's, else Triton's copy).
  objdump=$(command -v cuobjdump || "$PY" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null)
  for so in $("$PY" -c 'import glob, os, immiscible_ops as m; print(*glob.glob(os.path.join(os.path.dirname(m.__file__), "_C_cuda*.so")))' 2>/dev/null) \
            "$MIN1"/immiscible_ops/_C_cuda*.so; do
    [[ -x "$objdump" && -f "$so" ]] || continue
    { echo "=== $so"; "$objdump" --dump-resource-usage "$so" 2>&1 | grep -E "Function|REG"; } >>"$OUT/bench.log"
  done
  "$PY" - "$WORK/bounds.tsv" <<'EOF' | tee -a "$SUMMARY"
import json, sys
runs = {}
for line in open(sys.argv[1]):
    variant, _, payload = line.rstrip("\n").partition("\t")
    try:
        runs[variant] = {(r["regime"], r["problems"], r["n"], r["m"]): r["ms"] for r in json.loads(payload)}
    except ValueError:
        runs[variant] = {}
fmt = lambda t: "-" if t is None else f"{t:.3f}"
print("\n| regime | problems | N x M | __launch_bounds__(512) ms | (512, 1) ms |\n|---|---:|---|---:|---:|")
for k in sorted({k for r in runs.values() for k in r}):
    a, b = (runs.get(v, {}).get(k) for v in ("(512)", "(512, 1)"))
    print(f"| {k[0]} | {k[1]} | {k[2]}x{k[3]} | {fmt(a)} | {fmt(b)} |")
EOF
fi

echo
cat "$SUMMARY"
