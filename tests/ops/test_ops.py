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
    seed = torch.tensor([123456789], dtype=torch.int64, device=device)
    for k, dtype in ((1, torch.float32), (5, torch.float32), (3, torch.bfloat16)):
        samples.append((torch.ops.immiscible.knn_noise.default, (x.to(dtype), k, seed)))
    samples.append((torch.ops.immiscible.knn_noise.default, (x[:0], 4, seed)))
    return samples


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


def test_every_operator_is_sampled():
    ops = {op._schema.name.split("::")[1] for op, _ in sample_inputs()}
    public = {"linear_assignment", "pairwise_distance", "assign", "knn_noise"}
    assert public <= ops


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index", range(len(sample_inputs())))
def test_opcheck(index, device):
    op, args = sample_inputs(device)[index]
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
        noise, index = torch.ops.immiscible.knn_noise(torch.empty(4, 3, 5, dtype=torch.bfloat16), 7,
                                                      torch.empty(1, dtype=torch.int64))
        assert noise.shape == (4, 3, 5) and noise.dtype == torch.bfloat16
        assert index.shape == (4,) and index.dtype == torch.long


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


def test_compile_fullgraph_knn_noise():
    def f(x, seed):
        noise, index = torch.ops.immiscible.knn_noise(x, 6, seed)
        return (x - noise).square().mean(), index

    g = torch.Generator().manual_seed(3)
    x, seed = torch.randn(5, 2, 9, generator=g), torch.tensor([77], dtype=torch.int64)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss, index = compiled(x, seed)
    ref_loss, ref_index = f(x, seed)
    assert torch.equal(index, ref_index) and torch.equal(loss, ref_loss)


@pytest.mark.parametrize("args,name", [
    ((torch.ones(3, 4, dtype=torch.long), 2), "x"),
    ((torch.randn(3, 4), 0), "k"),
    ((torch.randn(3, 4), 2, torch.tensor([1], dtype=torch.int32)), "seed"),
    ((torch.randn(3, 4), 2, torch.tensor([1, 2])), "seed"),
])
def test_knn_noise_validates(args, name):
    x, k, *rest = args
    seed = rest[0] if rest else torch.tensor([5], dtype=torch.int64)
    with pytest.raises(ValueError, match=f"^{name}:"):
        torch.ops.immiscible.knn_noise(x, k, seed)
