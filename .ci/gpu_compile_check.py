"""The GPU code compiled for its real targets, without a GPU, and its resources checked.

Triton: the kernels the launchers would run for a set of representative calls
(`triton_distance._distance`, `triton_knn.knn_noise_triton`), every autotune config the launcher's
pruning leaves in, compiled by `triton.compile` for sm_80, sm_90 and sm_100
with Triton's bundled ptxas; registers, spills and stack from its `ptxas -v` log, shared
memory from the kernel's metadata, tensor-core instructions counted in the PTX.
CUDA: csrc/cuda/linear_assignment_cuda.cu compiled by nvcc for each target and both
launch-bounds variants (IMMISCIBLE_AUCTION_MIN_BLOCKS unset / =1), `ptxas -v` per kernel.

Exit status 1 on any of:
  * a compile error;
  * spill stores in a Triton kernel that can run (its shared memory fits the target), beyond
    its entry in TRITON_SPILL_BUDGET (empty: no spill is budgeted);
  * an autotune config that fits shared memory on none of the checked targets (dead config);
  * a CUDA kernel over CUDA_BUDGET (registers, spill stores) on a target;
  * a CUDA kernel that does not fit the launcher's 512 threads per block (registers > 128).

    python .ci/gpu_compile_check.py                          # the CI subset (see SUBSET)
    python .ci/gpu_compile_check.py --full --jobs 2 --markdown table.md --json table.json
    python .ci/gpu_compile_check.py --update-doc docs/GPU.md # rewrite the table in docs/GPU.md

Runs in its own process (not in pytest): TRITON_INTERPRET=1, which the test suite sets, turns
every kernel into an interpreted function that Triton cannot compile.
"""

import argparse
import concurrent.futures as futures
import contextlib
import io
import json
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ in ("__main__", "__mp_main__"):  # the script and its worker processes, not an import
    os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, minus its warning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Largest shared memory one block may opt into (CUDA programming guide, "Technical
# Specifications per Compute Capability"): sm_80 163 KB, sm_86/89/120 99 KB, sm_90/100 227 KB.
MAX_SHARED = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448, 120: 101376}

# (kernel, target, config) -> spill-store bytes allowed; every other kernel that can run must not
# spill. sm_100 only (likely cause, not verified: with tcgen05 the accumulator lives in tensor
# memory and the epilogue loads all of it into registers, 128 fp32 a thread for 128x256 on 8 warps
# or 128x128 on 4): ptxas spills a few hundred bytes. The fix: sm_100 tile configs, on a B200.
# Figures of the 2026-12-02 run rounded up to 64 bytes.
TRITON_SPILL_BUDGET = {
    ("_sqdist_kernel", 100, "128x256x64 s3 w8"): 704,
    ("_sqdist_kernel", 100, "256x128x64 s3 w8"): 704,
    ("_sqdist_kernel", 100, "128x256x128 s3 w8"): 768,
    ("_sqdist_kernel", 100, "128x128x64 s4 w4"): 448,
}

# The CUDA auction: (kernel, target, variant) -> (max registers, max spill-store bytes). On sm_80
# and sm_90 ptxas holds __launch_bounds__(512) at 64 registers and spills: the known cost of that
# variant (docs/GPU.md "Resources"), budgeted at its figure rounded up, so any growth fails CI.
# On sm_100 it takes 128 registers and spills nothing. Variant "min1" (__launch_bounds__(512, 1))
# may take up to 128 registers and must not spill; so must anything not listed.
CUDA_BUDGET = {
    ("auction_grid_kernel", 80, "default"): (64, 192),
    ("auction_grid_kernel", 90, "default"): (64, 256),
    ("auction_block_kernel", 80, "default"): (64, 128),
    ("auction_block_kernel", 90, "default"): (64, 192),
}
CUDA_MIN1_BUDGET = (128, 0)
CUDA_VARIANTS = {"default": [], "min1": ["-DIMMISCIBLE_AUCTION_MIN_BLOCKS=1"]}


# ---------------------------------------------------------------------------------------------
# Which calls. The registers a kernel needs are set by its tile config, operand width, target and
# whether the row length lets Triton prove 16-byte alignment (D % 16): not by the sizes beyond
# that. So per launcher a few calls cover every compiled variant the launcher can produce:
#   distance  N = M = 1024 (no config pruned away), D = 1024 (aligned, every BLOCK_K divides it)
#             and D = 1000 (ragged: padded to 1008, K tail masked); l2 (sqeuclidean differs only
#             by the final sqrt); fp16 and fp8 on every target (fp8 is the fp16 kernel plus the
#             scale on sm_80, e4m3 wgmma on sm_90), fp32 (the IEEE configs), l1 in fp32 and fp8;
#             bf16: its rounding kernel and one tile config (in the first run, every bf16 config
#             compiled to the same registers, spills and shared memory as fp16 on sm_80/sm_90);
#   knn       k = 1, 7, 64 (K_TILE 2, 8, 64), 512 (the largest tile), 513 and 4096 (past it:
#             tiled over k), D = 1000, fp32; bf16 at k = 64 (its own rounding code; fp16 is a
#             plain cast).
# An optional last element of a call limits it to the kernels whose "name config" matches.
# Targets: sm_80 (its code also runs on sm_86/89), sm_90, sm_100 (bundled ptxas-blackwell).
# --full adds sqeuclidean, all of bf16, fp16/bf16 l1, fp16 KNN, more k and sm_120.
SUBSET = {
    "distance": [  # (metric, precision, input dtype, D)
        ("l2", "fp16", "float32", 1024), ("l2", "fp16", "float32", 1000),
        ("l2", "fp8", "float32", 1024), ("l2", "fp8", "float32", 1000),
        ("l2", "fp32", "float32", 1024), ("l2", "fp32", "float32", 1000),
        ("l2", "bf16", "float32", 1024, r"_prepare_rows|_sqdist_kernel 64x64x64"),
        ("l1", "fp32", "float32", 1024), ("l1", "fp32", "float32", 1000),
        ("l1", "fp8", "float32", 1000),
    ],
    "knn": [  # (k, input dtype, D)
        (1, "float32", 1000), (7, "float32", 1000), (64, "float32", 1000), (512, "float32", 1000),
        (513, "float32", 1000), (4096, "float32", 1000), (64, "bfloat16", 1000),
    ],
    "targets": [80, 90, 100],
    # Targets compiled for the fp8 accumulation check only: Ada must not get fp8 mma.sync.
    "accumulation": {89: [("l2", "fp8", "float32", 1024, r"_sqdist_kernel 64x64x64")]},
}
FULL = {
    "distance": [(metric, precision, "float32", d)
                 for metric in ("l2", "sqeuclidean", "l1")
                 for precision in ("fp32", "fp16", "bf16", "fp8")
                 for d in (1024, 1000)] + [("l2", "fp16", "float16", 1000)],
    "knn": [(k, "float32", 1000) for k in (1, 2, 7, 16, 64, 100, 256, 512, 513, 1024, 4096)]
           + [(64, "float16", 1000), (64, "bfloat16", 1000)],
    "targets": [80, 90, 100, 120],
    "accumulation": {89: [("l2", "fp8", "float32", d) for d in (1024, 1000)]},
}
N_ROWS = 1024


# ---------------------------------------------------------------------------------------------
# Triton: collect the launches, expand autotune configs, compile


def _jit_name(fn):
    """(module, function name) of a JITFunction, so a worker process can rebuild it."""
    return fn.fn.__module__, fn.fn.__name__


def _expand(kernel, args, kwargs):
    """[(JITFunction, kwargs, config label)] for one launch: each config an Autotuner's pruning
    keeps, then Heuristics' values, as Autotuner.run and Heuristics.run compute them."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction
    if isinstance(kernel, Autotuner):
        nargs = dict(zip(kernel.arg_names, args, strict=False))  # trailing defaults may be absent
        configs = kernel.configs
        if kernel.early_config_prune:
            configs = kernel.early_config_prune(kernel.configs, nargs, **kwargs)
        out = []
        for cfg in configs:
            for fn, kw, _ in _expand(kernel.fn, args, {**kwargs, **cfg.all_kwargs()}):
                out.append((fn, kw, _config_label(cfg)))
        return out
    if isinstance(kernel, Heuristics):
        kw = dict(kwargs)
        for name, heur in kernel.values.items():
            kw[name] = heur({**dict(zip(kernel.arg_names, args, strict=False)), **kw})
        return _expand(kernel.fn, args, kw)
    assert isinstance(kernel, JITFunction), kernel
    return [(kernel, kwargs, None)]


def _config_label(cfg):
    k = cfg.kwargs
    if "BLOCK_M" in k:
        return f"{k['BLOCK_M']}x{k['BLOCK_N']}x{k['BLOCK_K']} s{cfg.num_stages} w{cfg.num_warps}"
    return str(cfg)


def _fixed_label(fn_name, kw):
    keys = {"_prepare_rows": ("BLOCK_D", "QUANT", "WRITE"),
            "_knn_noise_kernel": ("K_PAD", "K_TILE", "BLOCK")}
    parts = [f"{k}={int(kw[k]) if isinstance(kw[k], bool) else kw[k]}" for k in keys.get(fn_name, ()) if k in kw]
    return " ".join(parts + [f"w{kw.get('num_warps', 4)}"])


def _specialize(fn, target, args, kwargs):
    """(signature, constexprs, attrs, options) exactly as JITFunction.run would build them for
    these arguments on `target`: the JIT's own binder (int == 1 -> constexpr, divisibility by
    16 of ints and pointers -> tt.divisibility), without asking a driver for the device."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, options)
    return signature, constexprs, attrs, options.__dict__


def collect_triton(plan):
    """Every distinct Triton compile job of the plan: dicts with kernel, config, target, case."""
    import torch
    from triton.backends.compiler import GPUTarget

    from immiscible_ops import triton_distance as td
    from immiscible_ops import triton_knn as knn

    jobs, seen = [], {}
    for cap in sorted({*plan["targets"], *plan.get("accumulation", {})}):
        target = GPUTarget("cuda", cap, 32)

        def record(kernel, grid, args, kwargs, case, only=None, target=target, cap=cap):
            for fn, kw, cfg in _expand(kernel, args, kwargs):
                label = cfg or _fixed_label(fn.__name__, kw)
                if only and not re.search(only, f"{fn.__name__} {label}"):
                    continue
                sig, constexprs, attrs, options = _specialize(fn, target, args, kw)
                key = (fn.__name__, cap, repr(sorted(sig.items())), repr(sorted(constexprs.items())),
                       repr(sorted(attrs.items())), options["num_warps"], options["num_stages"])
                if key in seen:
                    seen[key]["cases"].append(case)
                    continue
                job = {"fn": _jit_name(fn), "kernel": fn.__name__, "target": cap,
                       "config": label, "cases": [case],
                       "signature": sig, "constexprs": constexprs, "attrs": attrs,
                       "options": options, "autotuned": cfg is not None}
                seen[key] = job
                jobs.append(job)

        distance = list(plan["distance"]) if cap in plan["targets"] else []
        distance += plan.get("accumulation", {}).get(cap, [])
        for metric, precision, dtype, d, *only in distance:
            dt = getattr(torch, dtype)
            x, y = torch.empty(N_ROWS, d, dtype=dt), torch.empty(N_ROWS, d, dtype=dt)
            case = f"{metric} {precision} D={d}"
            td._distance(x, y, metric, precision, (cap // 10, cap % 10), False,
                         launch=lambda k, g, a, kw, case=case, only=only: record(k, g, a, kw, case, *only))

        if cap not in plan["targets"]:
            continue
        real = knn._knn_noise_kernel
        try:
            for k, dtype, d in plan["knn"]:
                case = f"knn k={k} {dtype} D={d}"

                class Recorder:
                    def __getitem__(self, grid, case=case, real=real):
                        return lambda *a, **kw: record(real, grid, a, kw, case)

                knn._knn_noise_kernel = Recorder()
                knn.knn_noise_triton(torch.empty(8, d, dtype=getattr(torch, dtype)), k, 1)
        finally:
            knn._knn_noise_kernel = real
    return jobs


def _tc_instructions(ptx):
    found = []
    for name, pattern in (("mma", r"\bmma\.sync\."), ("wgmma", r"\bwgmma\.mma_async\."),
                          ("tcgen05.mma", r"\btcgen05\.mma\.")):
        n = len(re.findall(pattern, ptx))
        if n:
            found.append(f"{name} x{n}")
    return ", ".join(found) or "-"


def _accumulation(asm):
    """How a kernel's dots accumulate: whether the PTX multiplies e4m3 operands on mma.sync or
    wgmma, and the largest maxNumImpreciseAcc of its dots in the TTGIR (products summed in the
    tensor core's own reduced-precision accumulator before an fp32 add; 0: none)."""
    fp8 = re.search(r"\b(?:mma\.sync|wgmma\.mma_async)[\w.]*\.e4m3", asm["ptx"]) is not None
    chunks = [int(v) for v in re.findall(r"maxNumImpreciseAcc = (\d+)", asm.get("ttgir", ""))]
    return {"fp8_mma": fp8, "imprecise_acc": max(chunks, default=0)}


def _parse_ptxas(log):
    def num(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0
    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "stack": num(r"(\d+) bytes stack frame")}


def compile_job(job):
    """Worker: compile one job, return its resource figures (or the error)."""
    import importlib

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    module, name = job["fn"]
    fn = getattr(importlib.import_module(module), name)
    if not isinstance(fn, JITFunction):  # triton_distance keeps the plain function under its name
        fn = triton.jit(fn)
    src = ASTSource(fn, job["signature"], job["constexprs"], job["attrs"])
    knobs.nvidia.dump_ptxas_log = True  # make_cubin prints ptxas -v's log to stdout
    log = io.StringIO()
    start = time.perf_counter()
    result = {k: job[k] for k in ("kernel", "target", "config", "cases", "autotuned")}
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", job["target"], 32),
                                      options=job["options"])
    except Exception as exc:  # noqa: BLE001  (any compile failure is a finding)
        result.update(error=f"{type(exc).__name__}: {str(exc).strip()[-1500:]}",
                      seconds=time.perf_counter() - start)
        return result
    result.update(_parse_ptxas(log.getvalue()))
    result.update(_accumulation(compiled.asm))
    result.update(shared=compiled.metadata.shared, tensor_cores=_tc_instructions(compiled.asm["ptx"]),
                  seconds=round(time.perf_counter() - start, 2))
    return result


# ---------------------------------------------------------------------------------------------
# CUDA module: nvcc + ptxas -v


def find_nvcc():
    for home in filter(None, [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]):
        if Path(home, "bin", "nvcc").exists():
            return str(Path(home, "bin", "nvcc")), home
    nvcc = shutil.which("nvcc")
    return (nvcc, str(Path(nvcc).resolve().parent.parent)) if nvcc else (None, None)


def compile_cuda(target, variant, nvcc, cuda_home):
    """ptxas figures per kernel of the CUDA module for one target and launch-bounds variant.
    The flags that shape code generation are setup.py's (-O3, C++17, USE_CUDA, the torch target)."""
    from torch.utils.cpp_extension import include_paths
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-cubin", f"-arch=sm_{target}", "-O3", "-std=c++17", "--expt-relaxed-constexpr",
               "-DUSE_CUDA", "-DTORCH_TARGET_VERSION=0x020a000000000000", "-Xptxas", "-v",
               f"-I{ROOT / 'csrc'}", f"-I{Path(cuda_home, 'include')}",
               *[f"-I{p}" for p in include_paths()], *CUDA_VARIANTS[variant],
               str(ROOT / "csrc/cuda/linear_assignment_cuda.cu"), "-o", str(Path(tmp, "k.cubin"))]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = round(time.perf_counter() - start, 1)
    if proc.returncode:
        return [{"kernel": "linear_assignment_cuda.cu", "target": target, "variant": variant,
                 "error": (proc.stderr or proc.stdout)[-2000:], "seconds": seconds}]
    rows = parse_nvcc_log(proc.stderr)
    for r in rows:
        r.update(target=target, variant=variant, seconds=seconds)
    return rows


def _kernel_name(mangled):
    """The unqualified function name in an Itanium-mangled name (its length-prefixed parts:
    ..._ZN10immiscible4cuda...19auction_grid_kernelEPKf... -> auction_grid_kernel)."""
    if not mangled.startswith("_Z"):
        return mangled  # extern "C"
    names, i = [], 2
    while i < len(mangled):
        m = re.match(r"\d+", mangled[i:])
        if not m:
            i += 1
            continue
        n, i = int(m.group()), i + len(m.group())
        names.append(mangled[i:i + n])
        i += n
    return next((n for n in reversed(names) if n.endswith("_kernel")), mangled)


def parse_nvcc_log(log):
    """[{kernel, registers, spill_stores, spill_loads, stack, shared}] from nvcc -Xptxas -v:
    per kernel "Compiling entry function '<mangled>' for 'sm_XX'", then its properties."""
    rows = []
    for block in re.split(r"(?=ptxas info\s*: Compiling entry function)", log)[1:]:
        name = _kernel_name(re.search(r"Compiling entry function '(\w+)'", block).group(1))
        smem = re.search(r"(\d+) bytes smem", block)
        rows.append({"kernel": name, **_parse_ptxas(block), "shared": int(smem.group(1)) if smem else 0})
    return rows


# ---------------------------------------------------------------------------------------------
# Checks and the table


def check_accumulation(rows, chunk):
    """Problems with the fp8 distance kernels' accumulation: on sm_90 every fp8 wgmma must sum at
    most `chunk` products in the tensor core's accumulator before an fp32 add (Triton's default
    there is 2^30: the whole K loop); on sm_89 no fp8 mma.sync may run at all (Triton cannot
    bound its accumulator). Also fails when the plan compiled no fp8 kernel for a target it
    names, so the check cannot pass by checking nothing."""
    problems, seen = [], {}
    for r in rows:
        if "error" in r or not any(" fp8 " in f" {c} " for c in r["cases"]):
            continue
        if r["kernel"] != "_sqdist_kernel" or r["target"] not in (89, 90):
            continue
        where = f"{r['kernel']} [{r['config']}] sm_{r['target']} ({'; '.join(r['cases'])})"
        seen[r["target"]] = seen.get(r["target"], 0) + 1
        if r["target"] == 90 and not (r.get("fp8_mma") and 0 < r.get("imprecise_acc", 0) <= chunk):
            problems.append(f"fp8 accumulation: {where}: fp8 wgmma {r.get('fp8_mma')}, "
                            f"maxNumImpreciseAcc {r.get('imprecise_acc')}; expected fp8 wgmma "
                            f"with at most {chunk}")
        if r["target"] == 89 and r.get("fp8_mma"):
            problems.append(f"fp8 accumulation: {where}: fp8 mma.sync on sm_89, whose "
                            "accumulator precision Triton does not control")
    return problems, seen


def check(triton_rows, cuda_rows, targets, fp8_targets=()):
    from immiscible_ops.triton_distance import FP8_ACC_CHUNK

    problems, seen = check_accumulation(triton_rows, FP8_ACC_CHUNK)
    problems += [f"fp8 accumulation: no fp8 distance kernel compiled for sm_{t}"
                 for t in fp8_targets if not seen.get(t)]
    for r in triton_rows:
        where = f"{r['kernel']} [{r['config']}] sm_{r['target']} ({'; '.join(r['cases'])})"
        if "error" in r:
            problems.append(f"compile error: {where}: {r['error'][:400]}")
            continue
        r["fits"] = r["shared"] <= MAX_SHARED[r["target"]]
        allowed = TRITON_SPILL_BUDGET.get((r["kernel"], r["target"], r["config"]), 0)
        if r["fits"] and r["spill_stores"] > allowed:
            problems.append(f"spill: {where}: {r['spill_stores']} bytes spill stores "
                            f"({r['registers']} registers), budget {allowed}")
    configs = {}
    for r in triton_rows:
        if r.get("autotuned") and "error" not in r:
            configs.setdefault((r["kernel"], r["config"], r["cases"][0].split(" D=")[0]), []).append(r["fits"])
    for (kernel, cfg, case), fits in configs.items():
        if not any(fits):
            problems.append(f"dead config: {kernel} [{cfg}] for {case} fits shared memory on none of "
                            f"sm_{', sm_'.join(map(str, targets))}")
    for r in cuda_rows:
        where = f"{r['kernel']} sm_{r['target']} variant {r['variant']}"
        if "error" in r:
            problems.append(f"compile error: {where}: {r['error'][:800]}")
            continue
        if r["variant"] == "min1":
            regs, spills = CUDA_MIN1_BUDGET
        else:
            regs, spills = CUDA_BUDGET.get((r["kernel"], r["target"], r["variant"]), (128, 0))
        r["budget"] = f"<= {regs} regs, <= {spills} B spill"
        if r["registers"] > regs or r["spill_stores"] > spills:
            problems.append(f"over budget: {where}: {r['registers']} registers, {r['spill_stores']} "
                            f"bytes spill stores; budget {regs} registers, {spills} bytes")
    return problems


def markdown(triton_rows, cuda_rows, header):
    lines = [header, "",
             "| kernel | config | target | registers | spill st/ld (B) | stack (B) | shared (B) | "
             "fits | tensor-core instr. (PTX) | calls |",
             "|---|---|---|---:|---:|---:|---:|---|---|---|"]
    order = sorted(triton_rows, key=lambda r: (r["kernel"], r["target"], r["config"], r["cases"][0]))
    for r in order:
        if "error" in r:
            lines.append(f"| {r['kernel']} | {r['config']} | sm_{r['target']} | error | | | | | | "
                         f"{'; '.join(r['cases'])} |")
            continue
        lines.append(f"| {r['kernel']} | {r['config']} | sm_{r['target']} | {r['registers']} | "
                     f"{r['spill_stores']}/{r['spill_loads']} | {r['stack']} | {r['shared']} | "
                     f"{'yes' if r.get('fits') else '**no**'} | {r['tensor_cores']} | "
                     f"{'; '.join(r['cases'])} |")
    if cuda_rows:
        lines += ["", "| CUDA kernel | variant | target | registers | spill st/ld (B) | stack (B) | "
                  "static smem (B) | budget |", "|---|---|---|---:|---:|---:|---:|---|"]
        for r in sorted(cuda_rows, key=lambda r: (r["kernel"], r["variant"], r["target"])):
            if "error" in r:
                lines.append(f"| {r['kernel']} | {r['variant']} | sm_{r['target']} | error | | | | |")
                continue
            bounds = "(512, 1)" if r["variant"] == "min1" else "(512)"
            lines.append(f"| {r['kernel']} | `__launch_bounds__{bounds}` | sm_{r['target']} | "
                         f"{r['registers']} | {r['spill_stores']}/{r['spill_loads']} | {r['stack']} | "
                         f"{r['shared']} | {r.get('budget', '')} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- gpu_compile_check: begin -->", "<!-- gpu_compile_check: end -->"


def compile_all(plan, args):
    """{"triton": rows, "cuda": rows, "meta": {...}}: every compile of the plan, 2 at a time."""
    start = time.perf_counter()
    import torch
    import triton

    triton_rows, cuda_rows, nvcc_version = [], [], ""
    with tempfile.TemporaryDirectory() as cache:
        # A fresh cache: a cached kernel would skip ptxas and leave no log to read.
        os.environ["TRITON_CACHE_DIR"] = cache
        pool = futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        pending = []
        if not args.no_cuda:
            nvcc, cuda_home = find_nvcc()
            if nvcc:
                nvcc_version = subprocess.run([nvcc, "--version"], capture_output=True,
                                              text=True).stdout.strip().splitlines()[-1]
                pending += [pool.submit(compile_cuda, t, v, nvcc, cuda_home)
                            for v in CUDA_VARIANTS for t in plan["targets"]]
            elif args.require_nvcc:
                raise SystemExit("nvcc not found (CUDA_HOME, /usr/local/cuda, PATH)")
            else:
                print("nvcc not found: CUDA module not checked", file=sys.stderr)
        if not args.no_triton:
            jobs = collect_triton(plan)
            if args.only:
                jobs = [j for j in jobs if re.search(args.only, f"{j['kernel']} {' '.join(j['cases'])}")]
            print(f"{len(jobs)} Triton kernels to compile for sm_{', sm_'.join(map(str, plan['targets']))}",
                  flush=True)
            # Slowest first (large tiles), so the pool does not end on one long compile.
            jobs.sort(key=lambda j: -j["options"]["num_warps"])
            pending += [pool.submit(compile_job, j) for j in jobs]
        for i, done in enumerate(futures.as_completed(pending), 1):
            result = done.result()
            (cuda_rows.extend if isinstance(result, list) else triton_rows.append)(result)
            if i % 25 == 0 or i == len(pending):
                print(f"  {i}/{len(pending)} compiled, {time.perf_counter() - start:.0f} s", flush=True)
        pool.shutdown()
    # CPU time of this process and its (waited-for) workers, ptxas and nvcc: what the check costs
    # on a machine of its own, whatever else shared this one.
    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    meta = {"command": "python .ci/gpu_compile_check.py" + (" --full" if args.full else ""),
            "date": time.strftime("%Y-%m-%d"), "triton": triton.__version__, "torch": torch.__version__,
            "nvcc": nvcc_version, "targets": plan["targets"], "jobs": args.jobs,
            "fp8_targets": [] if args.no_triton or args.only else
            sorted({*(t for t in plan["targets"] if t == 90), *plan.get("accumulation", {})}),
            "cpus": os.cpu_count(), "seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(cpu, 1)}
    return {"triton": triton_rows, "cuda": cuda_rows, "meta": meta}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the wider cross product (slow)")
    parser.add_argument("--targets", default=None, help="e.g. 80,90 (default: the plan's)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-triton", action="store_true")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--require-nvcc", action="store_true", help="fail when nvcc is missing")
    parser.add_argument("--only", default=None, help="regex on 'kernel case' (quick local runs)")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--from-json", default=None, help="check and render a --json file, no compile")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--update-doc", default=None, help="replace the table between the markers")
    args = parser.parse_args(argv)

    if args.from_json:
        run = json.loads(Path(args.from_json).read_text())
    else:
        plan = dict(FULL if args.full else SUBSET)
        if args.targets:
            plan["targets"] = [int(t) for t in args.targets.split(",")]
        run = compile_all(plan, args)
    triton_rows, cuda_rows, meta = run["triton"], run["cuda"], run["meta"]
    fp8_targets = [t for t in (89, 90) if t in meta.get("fp8_targets", [])]
    problems = check(triton_rows, cuda_rows, meta["targets"], fp8_targets)
    header = (f"`{meta['command']}` on {meta['date']}: triton {meta['triton']} (bundled ptxas), torch "
              f"{meta['torch']}{', nvcc ' + meta['nvcc'] if meta['nvcc'] else ''}; "
              f"{len(triton_rows)} Triton kernels, {len(cuda_rows)} CUDA kernel builds, "
              f"{meta['seconds']:.0f} s wall with {meta['jobs']} processes on {meta['cpus']} shared "
              f"cores, {meta['cpu_seconds']:.0f} s CPU. \"fits\": shared memory within the target's "
              f"per-block maximum (a config that does not fit is skipped by the autotuner).")
    table = markdown(triton_rows, cuda_rows, header)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps({**run, "problems": problems}, indent=1))
    if args.update_doc:
        doc = Path(args.update_doc)
        text = doc.read_text()
        if BEGIN not in text or END not in text:
            print(f"{doc}: no {BEGIN} ... {END} markers", file=sys.stderr)
            return 1
        head, rest = text.split(BEGIN, 1)
        doc.write_text(head + BEGIN + "\n" + table + END + rest.split(END, 1)[1])
    print(table)
    for p in problems:
        print("FAIL", p)
    print(f"gpu compile check: {len(triton_rows)} Triton kernels, {len(cuda_rows)} CUDA kernel builds, "
          f"{len(problems)} problems, {meta['seconds']:.0f} s wall, {meta['cpu_seconds']:.0f} s CPU")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
