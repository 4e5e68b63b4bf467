#!/usr/bin/env bash
# One GPU round on a machine with no network, sized to ONE device call of 9 minutes on one H100
# (the default profile, "round"). Stages in this order, each under its own time limit and all of
# them under ROUND_BUDGET seconds (default 540; a stage gets what is left when its turn comes):
#   install   the carried wheel (wheelhouse/immiscible_ops-*.whl) into a private target: seconds;
#             without one, a build from source for sm_90 (minutes: carry the wheel)   T_BUILD=300
#   test      the CUDA and Triton tests only (pytest -k cuda over the files that have CUDA
#             tests; the CPU suite runs in CI)                                          T_TEST=150
#   sanitize  compute-sanitizer memcheck and racecheck on small cases: both auction regimes,
#             the distance kernels (fp32/fp16/fp8) and knn                        T_SANITIZE=45 each
#   bench     benchmarks/bench_gpu.py --check with every contender it has (the GPU goals:
#             assign at B=1024/4096/16384, batched small problems, the scipy recipe, distance
#             throughput) T_BENCH=180, then benchmarks/bench_knn.py at its default size T_KNN=45
# Dropped to fit, run by PROFILE=full (about 25 minutes): the whole pytest suite, synccheck, and
# stage "bounds" (a second build with __launch_bounds__(512, 1), timed against the installed one).
# Without a GPU every stage starts and reports "skipped (no GPU)": the dry run that
# tests/build/test_gpu_round_dry_run.py keeps working. Logs, JSON and summary.md go to $OUT
# (at most 8 files: summary.md env.txt build.log pytest.log sanitizer.log bench.log bench.json
# bench.md).
#
#   bash benchmarks/gpu_round.sh                          # the 9-minute round
#   PROFILE=full bash benchmarks/gpu_round.sh             # everything
#   STAGES="install test" bash benchmarks/gpu_round.sh    # a subset
#
# Carry a wheel built on a CPU machine with nvcc:
#   IMMISCIBLE_BUILD_CUDA=1 IMMISCIBLE_CUDA_ARCHS=90 pip wheel --no-build-isolation --no-deps . -w wheelhouse
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/gpu_round_out}"
PY="${PYTHON:-python3}"
PROFILE="${PROFILE:-round}"
if [[ "$PROFILE" == full ]]; then
  STAGES="${STAGES:-install test sanitize bench bounds}"
  ROUND_BUDGET="${ROUND_BUDGET:-3600}"
else
  STAGES="${STAGES:-install test sanitize bench}"
  ROUND_BUDGET="${ROUND_BUDGET:-540}"
fi
WORK="$(mktemp -d /tmp/immiscible_round.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
START=$SECONDS

note() { echo "$*" | tee -a "$SUMMARY"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }
# Seconds a stage may run: its own limit, cut to what is left of the round (15 s are kept for
# the summary); 0 when nothing is left.
budget() {
  local left=$((ROUND_BUDGET - (SECONDS - START) - 15))
  ((left < 0)) && left=0
  echo $(($1 < left ? $1 : left))
}
HAVE_GPU=0
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_GPU=1
# Announces a stage; false (the stage is skipped, the round goes on) without a GPU or time.
stage() {
  local name=$1 limit=$2
  note "stage $name: start (limit ${limit} s, $((SECONDS - START)) s into the round)"
  if [[ $HAVE_GPU -ne 1 ]]; then note "stage $name: skipped (no GPU)"; return 1; fi
  if [[ $limit -le 0 ]]; then note "stage $name: skipped (round budget spent)"; return 1; fi
  return 0
}

note "# GPU round $(date -u +%Y-%m-%dT%H:%M:%SZ), profile $PROFILE, budget $ROUND_BUDGET s"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())"
  command -v nvcc >/dev/null && nvcc --version | tail -1
} 2>&1 | tee "$OUT/env.txt" | sed 's/^/    /' >>"$SUMMARY"

# ---- install: the carried wheel into a private target, else an in-place build -------------------
if want install; then
  limit=$(budget "${T_BUILD:-300}")
  if stage install "$limit"; then
    wheel=$(ls "$REPO"/wheelhouse/immiscible_ops-*.whl 2>/dev/null | tail -1)
    if [[ -n "$wheel" ]]; then
      timeout "$limit" "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" \
        "$wheel" >"$OUT/build.log" 2>&1
      rc=$?
      export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
      note "install: wheel $(basename "$wheel") rc=$rc"
    else
      (cd "$REPO" && IMMISCIBLE_BUILD_CUDA=1 IMMISCIBLE_CUDA_ARCHS="${IMMISCIBLE_CUDA_ARCHS:-90}" \
        MAX_JOBS="${MAX_JOBS:-16}" timeout "$limit" "$PY" setup.py build_ext --inplace) >"$OUT/build.log" 2>&1
      rc=$?
      export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
      note "install: built from source rc=$rc (no wheel carried; tail of build.log below on failure)"
      [[ $rc -ne 0 ]] && tail -20 "$OUT/build.log" | sed 's/^/    /' >>"$SUMMARY"
    fi
    # From a scratch folder, so that `import immiscible_ops` finds the installed package.
    (cd "$WORK" && "$PY" -c "import immiscible_ops as m; print('immiscible_ops from', m.__file__, 'cuda kernels', m.HAS_CUDA_KERNELS)") \
      2>&1 | tee -a "$SUMMARY"
  fi
fi
cp -r "$REPO/tests" "$WORK/tests"
[[ -f "$REPO/pyproject.toml" ]] && cp "$REPO/pyproject.toml" "$WORK/"
cd "$WORK" || exit 1

# ---- test: the CUDA and Triton tests (round), the whole suite (full) -----------------------------
if want test; then
  limit=$(budget "${T_TEST:-150}")
  if stage test "$limit"; then
    if [[ "$PROFILE" == full ]]; then
      selection=(tests)
    else
      # The operators' tests; -k cuda keeps the CUDA ones (and the few CPU ones so named): the
      # solver, distance, knn, opcheck of every op on CUDA.
      selection=(tests/ops -k cuda)
    fi
    timeout "$limit" "$PY" -m pytest -q -rs -p no:cacheprovider "${selection[@]}" \
      >"$OUT/pytest.log" 2>&1
    rc=$?
    note "test: rc=$rc  $(tail -1 "$OUT/pytest.log")"
    grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20 | sed 's/^/    /' >>"$SUMMARY"
  fi
fi

# ---- sanitize: compute-sanitizer on small cases ---------------------------------------------------
if want sanitize; then
  tools="memcheck racecheck"
  [[ "$PROFILE" == full ]] && tools="memcheck racecheck synccheck"
  cat >"$WORK/sanitize_case.py" <<'CASE'
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
for precision in ("fp32", "fp16", "fp8"):
    immiscible_ops.pairwise_distance(torch.randn(2, 33, 70, device="cuda"),
                                     torch.randn(41, 70, device="cuda"), precision=precision)
immiscible_ops.knn_noise(torch.randn(7, 3, 11, device="cuda"), 9)
torch.cuda.synchronize()
print("sanitize case done")
CASE
  : >"$OUT/sanitizer.log"
  for tool in $tools; do
    limit=$(budget "${T_SANITIZE:-45}")
    stage "sanitize-$tool" "$limit" || continue
    if ! command -v compute-sanitizer >/dev/null; then
      note "sanitize $tool: compute-sanitizer not found"
      continue
    fi
    echo "=== $tool" >>"$OUT/sanitizer.log"
    timeout "$limit" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      --target-processes all "$PY" "$WORK/sanitize_case.py" >>"$OUT/sanitizer.log" 2>&1
    rc=$?
    note "sanitize $tool: rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  done
fi

# ---- bench: the GPU goals -------------------------------------------------------------------------
if want bench; then
  limit=$(budget "${T_BENCH:-180}")
  if stage bench "$limit"; then
    # Every contender bench_gpu.py has, with fewer repeats than its default to fit the round.
    timeout "$limit" "$PY" "$REPO/benchmarks/bench_gpu.py" --check --repeats "${BENCH_REPEATS:-10}" \
      --json "$OUT/bench.json" --markdown "$OUT/bench.md" >"$OUT/bench.log" 2>&1
    rc=$?
    note "bench: rc=$rc"
    if [[ -s "$OUT/bench.md" ]]; then cat "$OUT/bench.md" >>"$SUMMARY"; else tail -20 "$OUT/bench.log" >>"$SUMMARY"; fi
    limit=$(budget "${T_KNN:-45}")
    if [[ $limit -gt 0 ]]; then
      echo "=== bench_knn" >>"$OUT/bench.log"
      timeout "$limit" "$PY" "$REPO/benchmarks/bench_knn.py" >>"$OUT/bench.log" 2>&1
      rc=$?
      note "bench_knn: rc=$rc $(grep -E 'speedup' "$OUT/bench.log" | tail -1)"
    fi
  fi
fi

# ---- bounds: __launch_bounds__(512) (installed) against (512, 1), the same solves ---------------
if want bounds && stage bounds "$(budget "${T_BOUNDS:-600}")"; then
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

note "round: $((SECONDS - START)) s of $ROUND_BUDGET (profile $PROFILE)"
echo
cat "$SUMMARY"
