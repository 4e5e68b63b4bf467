"""The operators as PyTorch sees them: opcheck, fake kernels, torch.compile(fullgraph=True)."""

import pytest
import torch

import immiscible_ops as io


def sample_inputs(device="cpu"):
    """(op, args) pairs covering every op, solver, metric and precision the device supports."""
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(3, 6, 9, generator=g).to(device)
    x = (0.5 * torch.randn(6, 2, 4, 4, generator=g)).to(device)
    noise = torch.randn(10, 2, 4, 4, generator=g).to(device)
    groups = torch.tensor([0, 1, 0, 2, 1, 0], device=device)
    samples = []
    for solver in ("auto", "exact", "auction"):
        samples.append((torch.ops.immiscible.linear_assignment.default, (cost, solver, None, True)))
    samples.append((torch.ops.immiscible.linear_assignment.default, (cost[0].t()[:6], "auto", 1e-3, False)))
    for metric in ("l2", "sqeuclidean", "l1"):
        for precision in ("fp32", "fp16", "bf16", "fp8"):
            samples.append((torch.ops.immiscible.pairwise_distance.default,
                            (x.flatten(1), noise.flatten(1), metric, precision)))
    samples.append((torch.ops.immiscible.pairwise_distance.default, (cost, cost[:1], "l2", "fp32")))
    samples.append((torch.ops.immiscible.assign.default,
                    (x, noise, "l2", "fp16", "auto", None, None, True)))
    samples.append((torch.ops.immiscible.assign.default,
                    (x, noise, "sqeuclidean", "fp32", "exact", None, groups, True)))
    return samples


@pytest.mark.parametrize("index", range(len(sample_inputs())))
def test_opcheck(index):
    op, args = sample_inputs()[index]
    torch.library.opcheck(op, args)


def test_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        cost = torch.empty(2, 5, 5, 8)
        assert torch.ops.immiscible.linear_assignment(cost).shape == (2, 5, 5)
        x, y = torch.empty(4, 7, 16), torch.empty(1, 9, 16)
        d = torch.ops.immiscible.pairwise_distance(x, y)
        assert d.shape == (4, 7, 9) and d.dtype == torch.float32
        idx = torch.ops.immiscible.assign(torch.empty(6, 3, 8, 8), torch.empty(12, 3, 8, 8))
        assert idx.shape == (6,) and idx.dtype == torch.long


def test_fake_kernels_validate_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(), pytest.raises(ValueError, match="N=5 > M=3"):
        torch.ops.immiscible.linear_assignment(torch.empty(5, 3))


def training_step(x, noise):
    idx = io.assign(x, noise, precision="fp32")
    matched = noise[idx]
    return (x - matched).square().mean(), idx


def test_compile_fullgraph_assign():
    g = torch.Generator().manual_seed(1)
    x = 0.5 * torch.randn(16, 3, 8, 8, generator=g)
    noise = torch.randn(16, 3, 8, 8, generator=g)
    compiled = torch.compile(training_step, fullgraph=True, backend="aot_eager")
    loss, idx = compiled(x, noise)
    ref_loss, ref_idx = training_step(x, noise)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(loss, ref_loss)


def test_compile_fullgraph_linear_assignment_and_distance():
    def f(a, b):
        return io.linear_assignment(io.pairwise_distance(a, b, metric="sqeuclidean"))

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(12, 5, generator=g), torch.randn(15, 5, generator=g)
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    assert torch.equal(compiled(a, b), f(a, b))
