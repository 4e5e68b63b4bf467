""".ci/gpu_compile_check.py: its log parsing and pass/fail rules, and one real compile.

The full check (about 150 kernels) runs in CI as its own step (.ci/run); here only what can go
wrong in the script itself: reading ptxas's figures, the rules that fail it, and that the
launcher's own arguments reach triton.compile for a target (one small kernel for sm_80).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "gpu_compile_check.py"
if not SCRIPT.exists():  # the wheel suite runs a copy of tests/ only; CI runs the check itself
    pytest.skip("a source-tree tool: .ci/gpu_compile_check.py is not here", allow_module_level=True)


@pytest.fixture(scope="module")
def gcc():
    spec = importlib.util.spec_from_file_location("gpu_compile_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NVCC_LOG = """ptxas info    : 28 bytes gmem
ptxas info    : Compiling entry function '_ZN10immiscible4cuda58_GLOBAL__N__71823a8d_25_linear_assignment_cuda_cu_a371326f19auction_grid_kernelEPKfiiifbiPhPdPlPi' for 'sm_90'
ptxas info    : Function properties for _ZN10immiscible4cuda58_GLOBAL__N__71823a8d_25_linear_assignment_cuda_cu_a371326f19auction_grid_kernelEPKfiiifbiPhPdPlPi
    144 bytes stack frame, 220 bytes spill stores, 416 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 144 bytes cumulative stack size, 1664 bytes smem
ptxas info    : Compile time = 883.444 ms
ptxas info    : Compiling entry function '_ZN10immiscible4cuda58_GLOBAL__N__71823a8d_25_linear_assignment_cuda_cu_a371326f20auction_block_kernelEPKfiifbiPhbPlPi' for 'sm_90'
ptxas info    : Function properties for _ZN10immiscible4cuda58_GLOBAL__N__71823a8d_25_linear_assignment_cuda_cu_a371326f20auction_block_kernelEPKfiifbiPhbPlPi
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 1280 bytes smem
"""


def test_parse_nvcc_log(gcc):
    rows = gcc.parse_nvcc_log(NVCC_LOG)
    assert rows == [
        {"kernel": "auction_grid_kernel", "registers": 64, "spill_stores": 220, "spill_loads": 416,
         "stack": 144, "shared": 1664},
        {"kernel": "auction_block_kernel", "registers": 64, "spill_stores": 0, "spill_loads": 0,
         "stack": 0, "shared": 1280},
    ]


def test_tensor_core_instructions(gcc):
    ptx = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 ...\n" * 3 + "wgmma.mma_async.sync.aligned ..."
    assert gcc._tc_instructions(ptx) == "mma x3, wgmma x1"
    assert gcc._tc_instructions("ld.global.v4.b32") == "-"


def _row(**kw):
    row = {"kernel": "_sqdist_kernel", "target": 80, "config": "64x64x64 s4 w4", "cases": ["l2 fp16 D=1024"],
           "autotuned": True, "registers": 200, "spill_stores": 0, "spill_loads": 0, "stack": 0,
           "shared": 16384, "tensor_cores": "mma x32"}
    row.update(kw)
    return row


def test_check_rules(gcc):
    assert gcc.check([_row(), _row(target=90)], [], [80, 90]) == []
    # A spill fails only where the kernel can run: a config over the target's shared memory
    # never launches (the autotuner skips it) ...
    problems = gcc.check([_row(spill_stores=40), _row(target=90, spill_stores=40, shared=10**6)], [], [80, 90])
    assert len(problems) == 1 and problems[0].startswith("spill:") and "sm_80" in problems[0]
    # ... but a config that fits on no checked target is dead weight in the autotuner.
    problems = gcc.check([_row(shared=10**6), _row(target=90, shared=10**6)], [], [80, 90])
    assert len(problems) == 1 and problems[0].startswith("dead config:")
    assert gcc.check([_row(error="PTXASError: boom")], [], [80])[0].startswith("compile error:")


def test_cuda_budget(gcc):
    rows = [dict(r, target=90, variant="default") for r in gcc.parse_nvcc_log(NVCC_LOG)]
    assert gcc.check([], rows, [90]) == []  # 220 B: within the default variant's stated budget
    rows[0]["spill_stores"] = 4096
    assert gcc.check([], rows, [90])[0].startswith("over budget: auction_grid_kernel sm_90")
    # (512, 1) must not spill at all.
    min1 = [dict(r, target=90, variant="min1") for r in gcc.parse_nvcc_log(NVCC_LOG)]
    problems = gcc.check([], min1, [90])
    assert len(problems) == 1 and "auction_grid_kernel" in problems[0]


def test_compiles_a_launcher_kernel_for_sm80(tmp_path):
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "table.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-cuda", "--targets", "80", "--jobs", "1",
         "--only", "^_prepare_rows .*l2 fp16 D=1000", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["triton"]
    assert rows and all(r["kernel"] == "_prepare_rows" and r["target"] == 80 for r in rows)
    assert all("error" not in r and r["registers"] > 0 and r["spill_stores"] == 0 for r in rows)
    # The ragged row (D = 1000) is written zero-padded to a multiple of 16 for the dot kernel.
    assert any("WRITE=1" in r["config"] for r in rows)


def test_fp8_accumulation_rules(gcc):
    fp8 = dict(cases=["l2 fp8 D=1024"], tensor_cores="wgmma x4")
    chunk = gcc.check_accumulation([_row(target=90, fp8_mma=True, imprecise_acc=32, **fp8)], 32)
    assert chunk == ([], {90: 1})
    # Triton's sm_90 default keeps the whole K loop in the tensor core's accumulator.
    problems, _ = gcc.check_accumulation(
        [_row(target=90, fp8_mma=True, imprecise_acc=2**30, **fp8)], 32)
    assert len(problems) == 1 and "maxNumImpreciseAcc 1073741824" in problems[0]
    ada = _row(target=89, fp8_mma=True, imprecise_acc=0, **fp8)
    problems, _ = gcc.check_accumulation([ada], 32)
    assert len(problems) == 1 and "sm_89" in problems[0]
    # fp16 operands on sm_89 (the e4m3 values are exact in fp16) pass; fp16 cases are not fp8's.
    assert gcc.check_accumulation([_row(target=89, fp8_mma=False, **fp8)], 32)[0] == []
    assert gcc.check_accumulation([_row(target=90, fp8_mma=False)], 32) == ([], {})
    # A plan that compiled no fp8 kernel for a target it checks fails instead of passing silently.
    hopper = _row(target=90, fp8_mma=True, imprecise_acc=32, **fp8)
    problems = gcc.check([hopper], [], [90], fp8_targets=[89, 90])
    assert any("no fp8 distance kernel compiled for sm_89" in p for p in problems)


def test_accumulation_read_from_the_compiled_ir(gcc):
    asm = {"ptx": "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {...}",
           "ttgir": "%1 = ttng.warp_group_dot %a, %b, %c {maxNumImpreciseAcc = 32 : i32}\n"
                    "%2 = ttng.warp_group_dot %a, %b, %c {maxNumImpreciseAcc = 1073741824 : i32}"}
    assert gcc._accumulation(asm) == {"fp8_mma": True, "imprecise_acc": 1073741824}
    asm = {"ptx": "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "ttgir": "tt.dot"}
    assert gcc._accumulation(asm) == {"fp8_mma": False, "imprecise_acc": 0}
