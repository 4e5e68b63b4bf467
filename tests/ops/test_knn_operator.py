"""immiscible::knn_noise as an operator: one schema, the reference as the CPU kernel, the fused
Triton kernel as the CUDA kernel (entered under x's device), validation at the boundary."""

import contextlib

import pytest
import torch

import immiscible_ops
from immiscible_ops import knn, reference

triton_knn = pytest.importorskip("immiscible_ops.triton_knn")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


def test_kernels_are_registered_per_device():
    for key in ("CompositeExplicitAutograd", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("immiscible::knn_noise", key)


def test_public_function_is_the_operator(gen):
    x = torch.randn(6, 3, 5, generator=gen)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    noise, index = immiscible_ops.knn_noise(x, 9, seed=seed, return_index=True)
    op_noise, op_index = torch.ops.immiscible.knn_noise(x, 9, torch.tensor([seed]))
    ref_noise, ref_index = reference.knn_noise_reference(x, 9, seed)
    assert torch.equal(noise, op_noise) and torch.equal(noise, ref_noise)
    assert torch.equal(index, op_index) and torch.equal(index, ref_index)
    # The chosen candidate is the nearest of the 9 the seed defines.
    cand = reference.candidate_noise(seed, torch.arange(6 * 9), 15).reshape(6, 9, 15).double()
    dist = (x.reshape(6, 1, 15).double() - cand).square().sum(-1)
    assert torch.equal(index, dist.argmin(1))


def test_cuda_kernel_enters_the_tensors_device(monkeypatch, gen):
    entered = []

    @contextlib.contextmanager
    def device_guard(device):
        entered.append(torch.device(device))
        yield

    monkeypatch.setattr(torch.cuda, "device", device_guard)
    monkeypatch.setattr(triton_knn, "knn_noise_triton",
                        lambda x, k, seed: (entered.append("launch"), (x.clone(), x.new_zeros(
                            x.shape[0], dtype=torch.long)))[1])
    x = torch.randn(3, 4, generator=gen)
    triton_knn._knn_noise_cuda(x, 2, torch.tensor([1]))
    assert entered == [x.device, "launch"]  # the guard is entered before the launch


@pytest.mark.parametrize("args,name", [
    ((torch.ones(3, 4, dtype=torch.long), 2, torch.tensor([1])), "x"),
    ((torch.randn(3, 4), -1, torch.tensor([1])), "k"),
    ((torch.randn(3, 4), 2, torch.tensor([1.0])), "seed"),
    ((torch.randn(3, 4), 2, 7), "seed"),
])
def test_cuda_entry_validates_before_touching_a_device(args, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        triton_knn._knn_noise_cuda(*args)


def test_seed_from_generator_is_reproducible(gen):
    x = torch.randn(4, 7, generator=gen)
    a = knn.knn_noise(x, 5, generator=torch.Generator().manual_seed(3))
    b = knn.knn_noise(x, 5, generator=torch.Generator().manual_seed(3))
    c = knn.knn_noise(x, 5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@two_gpus
def test_cuda_tensor_on_a_device_that_is_not_current(gen):
    x = torch.randn(9, 300, generator=gen)
    seed = torch.tensor([424242], dtype=torch.int64)
    with torch.cuda.device(0):
        noise, index = torch.ops.immiscible.knn_noise(x.to("cuda:1"), 16, seed.to("cuda:1"))
        torch.cuda.synchronize(1)
    assert noise.device == torch.device("cuda:1")
    ref_noise, ref_index = reference.knn_noise_reference(x, 16, seed)
    assert torch.equal(index.cpu(), ref_index)
    torch.testing.assert_close(noise.cpu(), ref_noise, rtol=1e-5, atol=1e-5)
