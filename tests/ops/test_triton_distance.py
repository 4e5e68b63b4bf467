"""Triton pairwise-distance kernels (immiscible_ops/triton_distance.py) vs reference.pairwise_distance.

The kernels run on CPU tensors only through the Triton interpreter, and TRITON_INTERPRET=1 must be
set before triton is first imported (it decides, at import, how every triton.jit function in
triton.language is built). This module sets it before its own imports; if another test module
imported triton first without it, the interpreter tests run again in a fresh subprocess instead.
"""

import os
import sys

if "triton" not in sys.modules:  # set later, it would break triton rather than enable it
    os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import immiscible_ops  # noqa: E402,F401  (loads the op schemas)
from immiscible_ops import reference  # noqa: E402

td = pytest.importorskip("immiscible_ops.triton_distance")
from triton.runtime.jit import JITFunction  # noqa: E402

METRICS = ("l2", "sqeuclidean", "l1")
PRECISIONS = ("fp32", "fp16", "bf16", "fp8")
# Kernel and reference see the same rounded inputs and products (exact in fp32 for every
# precision), so they differ only by fp32 summation order; fp8 adds the rescale by sx_i * sy_j.
TOL = {"fp32": (1e-5, 1e-5), "fp16": (1e-5, 1e-5), "bf16": (1e-5, 1e-5), "fp8": (3e-5, 3e-5)}

interp = pytest.mark.skipif(
    not td.INTERPRETED, reason="triton was imported without TRITON_INTERPRET=1 (see the subprocess test)"
)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
compiled = pytest.mark.skipif(not isinstance(td._sqdist_jit, JITFunction),
                              reason="TRITON_INTERPRET=1 runs the kernels on the host")


def assert_matches(got, ref, precision):
    rtol, atol = TOL[precision]
    # atol relative to the largest distance: |x|^2 + |y|^2 - 2 x.y cancels, so small squared
    # distances carry the rounding error of the large terms.
    torch.testing.assert_close(got, ref, rtol=rtol, atol=atol * max(1.0, ref.abs().max().item()))


def sample(gen, *shape, device="cpu", dtype=torch.float32):
    """Fresh N(0, 1) [shape] from conftest's seeded generator (made on CPU, then moved)."""
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Interpreter (CPU) tests


@interp
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_interp_odd_sizes(metric, precision, gen):
    x, y = sample(gen, 37, 70), sample(gen, 53, 70)
    got = td.triton_pairwise_distance(x, y, metric, precision)
    assert got.shape == (37, 53) and got.dtype == torch.float32
    assert_matches(got, reference.pairwise_distance(x, y, metric, precision), precision)


@interp
@pytest.mark.parametrize("metric,precision", [("l2", "fp8"), ("sqeuclidean", "fp16"), ("l1", "bf16")])
def test_interp_broadcast_batch(metric, precision, gen):
    x, y = sample(gen, 2, 1, 9, 33), sample(gen, 3, 17, 33)
    got = td.triton_pairwise_distance(x, y, metric, precision)
    assert got.shape == (2, 3, 9, 17)
    assert_matches(got, reference.pairwise_distance(x, y, metric, precision), precision)


@interp
@pytest.mark.parametrize("metric,precision", [("l2", "fp32"), ("l2", "fp8"), ("l1", "fp16")])
def test_interp_non_contiguous(metric, precision, gen):
    x = sample(gen, 45, 19).t()  # [19, 45], column-major
    y = sample(gen, 23, 90)[:, ::2]  # [23, 45], stride 2 along D
    got = td.triton_pairwise_distance(x, y, metric, precision)
    assert_matches(got, reference.pairwise_distance(x, y, metric, precision), precision)


@interp
@pytest.mark.parametrize("dtype,precision", [
    (torch.float16, "fp16"),  # no rounded copy: the kernel reads x and y as they are
    (torch.bfloat16, "fp32"),
    (torch.float64, "bf16"),
    (torch.float16, "fp8"),
])
def test_interp_input_dtypes(dtype, precision, gen):
    x, y = sample(gen, 21, 40, dtype=dtype), sample(gen, 30, 40, dtype=dtype)
    got = td.triton_pairwise_distance(x, y, "l2", precision)
    assert_matches(got, reference.pairwise_distance(x, y, "l2", precision), precision)


@interp
@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp8"])
def test_interp_rounding_is_torchs(precision, gen):
    # Magnitudes over 2^-30..2^10 (fp8: deep into e4m3's subnormals after the row scale) plus
    # exact ties between neighbours of each format, which round-to-nearest-even must break.
    t = sample(gen, 16, 64) * torch.exp2(torch.randint(-30, 11, (16, 64), generator=gen).float())
    ties = {"fp16": 1 + 2.0 ** -11, "bf16": 1 + 2.0 ** -8, "fp8": 1 + 2.0 ** -4}[precision]
    # Row 0's amax is 448, so its fp8 scale is 1 and the planted ties stay ties.
    t[0] = t[0].clamp(-400.0, 400.0)
    t[0, :9] = torch.tensor([ties, 3 * ties, -ties, 5 * ties, 2.0 ** -14, 0.0, -0.0, 1.0, 448.0])
    storage = td._dot_dtype(precision, None, True)[1]
    q, norms, scales = td._prepare(t, precision, storage, True, True)
    deq = q.float() * scales.unsqueeze(-1) if precision == "fp8" else q.float()
    want = reference.quantize(t, precision)
    assert torch.equal(deq, want)
    torch.testing.assert_close(norms, want.square().sum(-1), rtol=1e-5, atol=0)


@interp
def test_interp_fp8_scale_is_reference(gen):
    t = sample(gen, 11, 50) * 3.7
    t[3] = 0.0  # an all-zero row keeps scale 1
    _, _, scales = td._prepare(t, "fp8", torch.float8_e4m3fn, True, True)
    assert torch.equal(scales, reference.fp8_row_scale(t).squeeze(-1))


@interp
@pytest.mark.parametrize("n,m,d", [(1, 1, 1), (1, 5, 3), (33, 1, 129), (64, 64, 64)])
def test_interp_edge_sizes(n, m, d, gen):
    x, y = sample(gen, n, d), sample(gen, m, d)
    for metric in ("l2", "l1"):
        got = td.triton_pairwise_distance(x, y, metric, "fp32")
        assert_matches(got, reference.pairwise_distance(x, y, metric, "fp32"), "fp32")


@interp
def test_interp_empty(gen):
    assert td.triton_pairwise_distance(sample(gen, 0, 8), sample(gen, 5, 8)).shape == (0, 5)
    assert td.triton_pairwise_distance(sample(gen, 2, 0, 8), sample(gen, 5, 8)).shape == (2, 0, 5)
    assert torch.equal(td.triton_pairwise_distance(sample(gen, 3, 0), sample(gen, 4, 0)), torch.zeros(3, 4))


@interp
def test_interp_same_assignment_as_reference(gen):
    # The quantity that matters downstream: the optimal assignment on the kernel's distances.
    x, noise = 0.5 * sample(gen, 24, 256), sample(gen, 24, 256)
    got = td.triton_pairwise_distance(x, noise, "l2", "fp16")
    want = reference.pairwise_distance(x, noise, "l2", "fp16")
    a, b = immiscible_ops.linear_assignment(got), immiscible_ops.linear_assignment(want)
    torch.testing.assert_close(reference.assignment_cost(want, a), reference.assignment_cost(want, b),
                               rtol=1e-5, atol=0)


def _launches(x, y, metric, precision, capability=(9, 0)):
    calls = []
    td._distance(x, y, metric, precision, capability, False,
                 launch=lambda kernel, grid, args, kwargs: calls.append((kernel, args, kwargs)))
    return calls


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("d", [1, 33, 1000, 1024])
@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_tensor_core_rows_are_16_aligned(precision, d, capability, gen):
    # What the compiled kernel sees (no kernel runs): a row length that is a multiple of 16,
    # without which sm_80 spills 10-19 KB (docs/GPU.md "Resources"); l1 reads the rows as given.
    x, y = sample(gen, 5, d), sample(gen, 7, d)
    kernel, args, _ = _launches(x, y, "l2", precision, capability)[-1]
    assert kernel is (td._sqdist_ieee if precision == "fp32" else td._sqdist_tc)
    xq, yq, d_k = args[0], args[1], args[9]
    assert d_k % 16 == 0 and 0 <= d_k - d < 16
    assert xq.shape[-1] == yq.shape[-1] == d_k and xq.stride(-2) == yq.stride(-2) == d_k
    kernel, args, _ = _launches(x, y, "l1", precision, capability)[-1]
    assert kernel is td._l1_tuned and args[7] == d


@pytest.mark.parametrize("dot", ["float16", "bfloat16", "float8e4nv"])
@pytest.mark.parametrize("n", [1, 100, 1024])
def test_prune_drops_tiles_that_cannot_fit(dot, n):
    # BLOCK_K 128 with 2-byte operands needs 192-288 KB of shared memory: no GPU has it.
    import triton.language as tl
    kept = td._prune(td._TC_CONFIGS, {"N": n, "M": 1024}, DOT_DTYPE=getattr(tl, dot))
    assert kept and all(c.kwargs["BLOCK_M"] <= max(64, 1 << (n - 1).bit_length()) for c in kept)
    # (the BLOCK_K 128 tiles are 128 rows high: below that the size rule drops them anyway)
    assert any(c.kwargs["BLOCK_K"] == 128 for c in kept) == (dot == "float8e4nv" and n > 64)


def test_aligned_fp32_is_not_copied(gen):
    x, y = sample(gen, 5, 64), sample(gen, 7, 64)
    kernel, args, _ = _launches(x, y, "l2", "fp32")[-1]
    assert args[0].data_ptr() == x.data_ptr() and args[1].data_ptr() == y.data_ptr()


@interp
@pytest.mark.parametrize("precision", PRECISIONS)
def test_interp_padded_copy(precision, gen):
    t = sample(gen, 2, 9, 37) * 3.0
    storage = td._dot_dtype(precision, None, True)[1]
    q, norms, scales = td._prepare(t, precision, storage, True, True, pad=True)
    assert q.shape == (2, 9, 48)
    assert torch.equal(q[..., 37:].float(), torch.zeros(2, 9, 11))
    want = reference.quantize(t, precision)
    deq = q[..., :37].float() * scales.unsqueeze(-1) if precision == "fp8" else q[..., :37].float()
    assert torch.equal(deq, want)
    torch.testing.assert_close(norms, want.square().sum(-1), rtol=1e-5, atol=0)


def test_cuda_kernel_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("immiscible::pairwise_distance", "CUDA")


@pytest.mark.parametrize("args,name", [
    ((torch.randn(3, 4), torch.randn(3, 5), "l2", "fp32"), "y"),
    ((torch.randn(4), torch.randn(3, 4), "l2", "fp32"), "x"),
    ((torch.randn(3, 4), torch.randn(3, 4), "cosine", "fp32"), "metric"),
    ((torch.randn(3, 4), torch.randn(3, 4), "l2", "int8"), "precision"),
    ((torch.randn(2, 3, 4), torch.randn(3, 3, 4), "l2", "fp32"), "y"),
    ((torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4), "l2", "fp32"), "x"),
])
def test_cuda_entry_validates(args, name):
    # The CUDA kernel checks its arguments before touching the device, so CPU tensors suffice.
    with pytest.raises(ValueError, match=f"^{name}:"):
        td._pairwise_distance_cuda(*args)


def test_cpu_without_interpreter_is_a_clear_error(monkeypatch, gen):
    monkeypatch.setattr(td, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        td.triton_pairwise_distance(sample(gen, 3, 4), sample(gen, 3, 4))


@pytest.mark.skipif(td.INTERPRETED, reason="the interpreter tests already ran in this process")
def test_interpreter_in_subprocess():
    env = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interp_", __file__],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


_COMPILE_FOR_HOPPER = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from immiscible_ops import triton_distance as td

def compile(fn, sig, const, warps):
    sig = {**sig, **{name: "constexpr" for name in const}}
    src = ASTSource(fn=fn, signature=sig, constexprs=const)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "num_stages": 3}).asm["ptx"]

compile(td._prepare_jit, {"src": "*fp32", "dst": "*fp8e4nv", "scale_out": "*fp32", "norm_out": "*fp32",
        "D": "i32", "D_OUT": "i32", "stride_r": "i32", "stride_d": "i32"},
        {"BLOCK_D": 1024, "QUANT": 3, "WRITE": True}, 4)
ints = {n: "i32" for n in "N M D sxb sxn sxd syb sym syd snxb snyb sob son som".split()}
for ptr, dot, bk in (("*fp16", tl.float16, 64), ("*fp8e4nv", tl.float8e4nv, 128)):
    ptx = compile(td._sqdist_jit, {"x": ptr, "y": ptr, "nx": "*fp32", "ny": "*fp32", "sx": "*fp32",
                  "sy": "*fp32", "out": "*fp32", **ints},
                  {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": bk, "GROUP_M": 8, "DOT_DTYPE": dot,
                   "IEEE": False, "SCALED": ptr == "*fp8e4nv", "SQRT": True, "EVEN_K": False}, 8)
    assert "wgmma" in ptx, ptr
compile(td._l1_jit, {"x": "*fp16", "y": "*fp16", "sx": "*fp32", "sy": "*fp32", "out": "*fp32", **ints},
        {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 4, "GROUP_M": 8, "SCALED": False}, 8)
print("ok")
"""


def test_compiles_for_hopper():
    # No GPU needed: Triton compiles for sm_90 ahead of time; the dot must lower to wgmma.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run([sys.executable, "-c", _COMPILE_FOR_HOPPER], env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode and "No module named" in result.stderr:
        pytest.skip(f"triton's CUDA backend unavailable: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-4000:]


# ---------------------------------------------------------------------------------------------
# CUDA tests: the registered op on GPU tensors vs the CPU op


@cuda
@compiled
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n,m,d", [(37, 53, 70), (300, 257, 1000), (129, 130, 4096)])
def test_cuda_matches_cpu_op(metric, precision, n, m, d, gen):
    x, y = 0.5 * sample(gen, n, d), sample(gen, m, d)
    got = torch.ops.immiscible.pairwise_distance(x.cuda(), y.cuda(), metric, precision)
    want = torch.ops.immiscible.pairwise_distance(x, y, metric, precision)
    assert got.is_cuda
    assert_matches(got.cpu(), want, precision)


@cuda
@compiled
@pytest.mark.parametrize("precision", PRECISIONS)
def test_cuda_batched_non_contiguous(precision, gen):
    x = sample(gen, 2, 1, 70, 31, device="cuda").transpose(-1, -2)  # [2, 1, 31, 70]
    y = sample(gen, 3, 45, 140, device="cuda")[..., ::2]  # [3, 45, 70]
    got = immiscible_ops.pairwise_distance(x, y, precision=precision)
    want = immiscible_ops.pairwise_distance(x.cpu(), y.cpu(), precision=precision)
    assert got.shape == (2, 3, 31, 45)
    assert_matches(got.cpu(), want, precision)


@cuda
@compiled
def test_cuda_opcheck(gen):
    x, y = sample(gen, 20, 64, device="cuda"), sample(gen, 24, 64, device="cuda")
    torch.library.opcheck(torch.ops.immiscible.pairwise_distance.default, (x, y, "l2", "fp16"))
