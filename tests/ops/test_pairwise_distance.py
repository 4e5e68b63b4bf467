"""pairwise_distance on CPU: metrics against float64 ground truth, quantization semantics."""

import pytest
import torch

import immiscible_ops as io
from immiscible_ops.reference import FP8_MAX, fp8_row_scale, quantize


def truth(x, y, metric):
    x, y = x.double(), y.double()
    if metric == "l1":
        return torch.cdist(x, y, p=1)
    d = torch.cdist(x, y, p=2)
    return d if metric == "l2" else d.square()


@pytest.mark.parametrize("metric", ["l2", "sqeuclidean", "l1"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 53, 70), (64, 64, 257)],
                         ids=lambda s: "x".join(map(str, s)))
def test_fp32_matches_float64(metric, shape, gen):
    n, m, d = shape
    x = 0.5 * torch.randn(n, d, generator=gen)
    y = torch.randn(m, d, generator=gen)
    out = io.pairwise_distance(x, y, metric=metric)
    assert out.dtype == torch.float32 and out.shape == (n, m)
    torch.testing.assert_close(out.double(), truth(x, y, metric), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precisions_quantize_inputs_first(precision, dtype, gen):
    x, y = torch.randn(20, 33, generator=gen), torch.randn(25, 33, generator=gen)
    out = io.pairwise_distance(x, y, precision=precision)
    expected = truth(x.to(dtype).float(), y.to(dtype).float(), "l2")
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-4)


def test_fp8_per_row_scale(gen):
    x = torch.randn(40, 64, generator=gen) * torch.logspace(-2, 2, 40).unsqueeze(1)
    q = quantize(x, "fp8")
    scale = fp8_row_scale(x)
    # Every row's largest magnitude lands on the e4m3 maximum; e4m3 keeps 3 mantissa bits.
    assert torch.allclose((x.abs().amax(1, keepdim=True) / scale), torch.full((40, 1), FP8_MAX))
    assert ((q - x).abs() <= x.abs() * 2**-4 + scale * 2**-9).all()
    y = torch.randn(30, 64, generator=gen)
    out = io.pairwise_distance(x, y, precision="fp8")
    torch.testing.assert_close(out.double(), truth(q, quantize(y, "fp8"), "l2"), rtol=1e-5, atol=1e-3)


def test_zero_rows_survive_fp8():
    x = torch.zeros(3, 8)
    out = io.pairwise_distance(x, x, precision="fp8")
    assert torch.equal(out, torch.zeros(3, 3))


def test_batch_dims_broadcast(gen):
    x = torch.randn(2, 3, 7, 5, generator=gen)
    y = torch.randn(1, 3, 9, 5, generator=gen)
    out = io.pairwise_distance(x, y)
    assert out.shape == (2, 3, 7, 9)
    torch.testing.assert_close(out[1, 2].double(), truth(x[1, 2], y[0, 2], "l2"), rtol=1e-5, atol=1e-4)


def test_non_contiguous_and_low_precision_inputs(gen):
    x = torch.randn(16, 40, generator=gen).t()  # [40, 16] view
    y = torch.randn(30, 16, generator=gen).half()
    out = io.pairwise_distance(x, y, metric="sqeuclidean")
    torch.testing.assert_close(out.double(), truth(x, y.float(), "sqeuclidean"), rtol=1e-5, atol=1e-3)


def test_distances_never_negative():
    x = torch.full((5, 3000), 7.0)
    assert (io.pairwise_distance(x, x, metric="sqeuclidean") >= 0).all()
