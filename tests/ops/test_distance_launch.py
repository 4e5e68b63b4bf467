"""The distance launcher's decisions that only a GPU would otherwise exercise: batches beyond
CUDA's grid limit, element offsets past int32, autotuning per size bucket and inside a CUDA-graph
capture, the fp8 dot's accumulation and tiles. Kernels run under the Triton interpreter (CPU
tensors); launches that would need a GPU are recorded instead of run."""

import pytest
import torch

import immiscible_ops  # noqa: F401  (loads the op schemas)
from immiscible_ops import reference

td = pytest.importorskip("immiscible_ops.triton_distance")
import triton.language as tl  # noqa: E402

interp = pytest.mark.skipif(not td.INTERPRETED,
                            reason="needs TRITON_INTERPRET=1 at triton's import")


def _record(x, y, metric, precision, capability=(9, 0)):
    calls = []
    def launch(kernel, grid, args, kwargs):
        calls.append((kernel, grid, args, kwargs))

    td._distance(x, y, metric, precision, capability, False, launch=launch)
    return calls


@pytest.mark.parametrize("metric,precision", [("l2", "fp16"), ("l2", "fp32"), ("l1", "fp8")])
def test_batches_beyond_the_grid_limit_are_sliced(metric, precision):
    p = td.MAX_GRID_Y + 4466  # 70001 problems of 1 x 2
    x, y = torch.randn(p, 1, 16), torch.randn(1, 2, 16)
    tile_launches = [c for c in _record(x, y, metric, precision) if c[0] is not td._prepare_jit]
    assert len(tile_launches) == 2
    covered = []
    for kernel, grid, args, _ in tile_launches:
        meta = kernel.configs[0].kwargs
        blocks_x, blocks_y = grid(meta)
        assert blocks_y <= td.MAX_GRID_Y and blocks_x == 1
        out = args[6] if metric != "l1" else args[4]
        assert out.shape[0] == blocks_y
        covered.append((out.data_ptr(), blocks_y))
    # The two slices tile the output: the second starts where the first ends.
    (first, n1), (second, n2) = covered
    assert n1 + n2 == p and second - first == n1 * 2 * 4


@interp
@pytest.mark.parametrize("metric,precision",
                         [("l2", "fp8"), ("sqeuclidean", "fp32"), ("l1", "bf16")])
def test_sliced_batches_match_the_reference(monkeypatch, metric, precision, gen):
    monkeypatch.setattr(td, "MAX_GRID_Y", 3)  # 7 problems in slices of 3, 3, 1
    x, y = torch.randn(7, 5, 24, generator=gen), torch.randn(1, 6, 24, generator=gen)
    got = td.triton_pairwise_distance(x, y, metric, precision)
    want = reference.pairwise_distance(x, y, metric, precision)
    torch.testing.assert_close(got, want, rtol=3e-5, atol=3e-5 * want.abs().max().item())


def _huge_stride_rows(values: torch.Tensor, stride: int, dtype) -> torch.Tensor:
    """values [R, D] placed at element stride `stride` along D (row stride 1) in a buffer that is
    only reserved, not touched, except where the values go: offsets up to (D - 1) * stride."""
    r, d = values.shape
    buffer = torch.empty((d - 1) * stride + r, dtype=dtype)  # lazily committed pages
    view = buffer.as_strided((r, d), (1, stride))
    view.copy_(values)
    return view


@interp
@pytest.mark.parametrize("metric,precision,d,stride", [
    # _prepare_rows reads (and rounds) the rows: offsets up to 2 * (2^30 + 8) > 2^31.
    ("l2", "bf16", 3, 2**30 + 8),
    # l1 in fp32 reads the fp16 input as it is: the tile kernel's own K offsets pass 2^31.
    ("l1", "fp32", 3, 2**30 + 8),
    # fp16 input, fp16 dot, D % 16 == 0: the tensor-core kernel reads the input as it is.
    ("sqeuclidean", "fp16", 16, 143165584),
])
def test_offsets_past_int32(metric, precision, d, stride, gen):
    # fp16 keeps the reserved buffer at 4.3 GB of address space (a few pages of it touched).
    x = _huge_stride_rows(torch.randn(5, d, generator=gen).half(), stride, torch.float16)
    y = torch.randn(4, d, generator=gen).half()
    assert x.stride(1) * (d - 1) >= 2**31 > x.stride(1)  # int32 strides, int64 offsets needed
    got = td.triton_pairwise_distance(x, y, metric, precision)
    want = reference.pairwise_distance(x.contiguous(), y, metric, precision)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


class _Recorder:
    """Stands in for a kernel: records the keyword arguments of each launch."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append(kwargs)


@pytest.fixture
def tuned(monkeypatch):
    """_sqdist_tc with its benchmarking replaced: run() records the call and 'picks' config 2."""
    kernel = td._sqdist_tc
    plain, benchmarks = _Recorder(), []

    def fake_run(*args, **kwargs):
        benchmarks.append(kwargs)
        kernel.best_config = kernel.configs[2]

    monkeypatch.setattr(kernel, "fn", plain)
    monkeypatch.setattr(kernel, "run", fake_run)
    monkeypatch.setattr(td, "_TUNED", {})
    return kernel, plain, benchmarks


def _tc_launch(n, m, d, capture=False, monkeypatch=None):
    calls = _record(torch.randn(n, d), torch.randn(m, d), "l2", "fp16")
    kernel, grid, args, kwargs = calls[-1]
    assert kernel is td._sqdist_tc
    if monkeypatch is not None:
        monkeypatch.setattr(td, "_capturing", lambda: capture)
    td._launch(kernel, grid, args, kwargs)


def test_autotuning_once_per_size_bucket(tuned, monkeypatch):
    kernel, plain, benchmarks = tuned
    monkeypatch.setattr(td, "_capturing", lambda: False)
    _tc_launch(100, 120, 64)
    assert len(benchmarks) == 1 and not plain.launches
    # Same buckets (128, 128, 64): the tuned config launches directly, no benchmark.
    _tc_launch(90, 127, 64)
    _tc_launch(65, 65, 49)
    assert len(benchmarks) == 1 and len(plain.launches) == 2
    chosen = kernel.configs[2]
    assert all(launch["BLOCK_M"] == chosen.kwargs["BLOCK_M"]
               and launch["num_warps"] == chosen.num_warps for launch in plain.launches)
    _tc_launch(300, 120, 64)  # a new bucket of N is tuned on its own
    assert len(benchmarks) == 2


def test_capture_never_benchmarks(tuned, monkeypatch):
    kernel, plain, benchmarks = tuned
    _tc_launch(1000, 1000, 256, capture=True, monkeypatch=monkeypatch)
    assert not benchmarks and len(plain.launches) == 1
    smallest = td._prune(kernel.configs, {"N": 1000, "M": 1000}, DOT_DTYPE=tl.float16)[-1]
    assert plain.launches[0]["BLOCK_M"] == smallest.kwargs["BLOCK_M"]
    assert plain.launches[0]["BLOCK_N"] == smallest.kwargs["BLOCK_N"]
    # Tuned before the capture, the bucket's tuned config is what the capture records.
    _tc_launch(1000, 1000, 256, capture=False, monkeypatch=monkeypatch)
    _tc_launch(900, 1000, 256, capture=True, monkeypatch=monkeypatch)
    assert len(benchmarks) == 1
    assert plain.launches[-1]["BLOCK_M"] == kernel.configs[2].kwargs["BLOCK_M"]


@pytest.mark.parametrize("capability,dot", [
    ((8, 0), tl.float16), ((8, 6), tl.float16), ((8, 9), tl.float16), ((9, 0), tl.float8e4nv),
    ((10, 0), tl.float8e4nv), ((12, 0), tl.float16),
])
def test_fp8_tensor_cores_only_where_accumulation_is_controlled(capability, dot):
    x, y = torch.randn(3, 32), torch.randn(4, 32)
    kernel, _, _, kwargs = _record(x, y, "l2", "fp8", capability)[-1]
    assert kwargs["DOT_DTYPE"] == dot


def test_fp8_tiles_leave_room_for_two_accumulators():
    kept = td._prune(td._TC_CONFIGS, {"N": 4096, "M": 4096}, DOT_DTYPE=tl.float8e4nv)
    fp16 = td._prune(td._TC_CONFIGS, {"N": 4096, "M": 4096}, DOT_DTYPE=tl.float16)
    def accumulators(c):  # fp32 values a thread holds for one accumulator tile
        return c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] // (32 * c.num_warps)

    assert kept and all(accumulators(c) <= 64 for c in kept)
    assert any(accumulators(c) > 64 for c in fp16)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_batch_beyond_the_grid_limit(gen):
    x, y = torch.randn(70001, 2, 8, generator=gen), torch.randn(1, 3, 8, generator=gen)
    got = torch.ops.immiscible.pairwise_distance(x.cuda(), y.cuda(), "l2", "fp16")
    want = reference.pairwise_distance(x, y, "l2", "fp16")
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@cuda
def test_cuda_graph_capture_of_an_untuned_shape(gen, monkeypatch):
    # A bucket never tuned: the capture launches the fallback config without benchmarking. Its
    # compile happens in a warm-up call outside the capture (as torch.compile's CUDA graphs warm
    # up), made to take the same path.
    monkeypatch.setattr(td, "_TUNED", {})
    x = torch.randn(777, 96, generator=gen).cuda()
    y = torch.randn(1555, 96, generator=gen).cuda()
    with monkeypatch.context() as m:
        m.setattr(td, "_capturing", lambda: True)
        torch.ops.immiscible.pairwise_distance(x, y, "sqeuclidean", "fp16")
    assert not td._TUNED
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        out = torch.ops.immiscible.pairwise_distance(x, y, "sqeuclidean", "fp16")
    graph.replay()
    torch.cuda.synchronize()
    assert not td._TUNED  # nothing was benchmarked
    want = reference.pairwise_distance(x.cpu(), y.cpu(), "sqeuclidean", "fp16")
    torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
