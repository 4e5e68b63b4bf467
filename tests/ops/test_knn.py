"""KNN noise: fused Triton kernel vs its numpy reference vs a naive materialize-and-argmin."""

import pytest
import torch
from conftest import run_knn_interpreted

# reference and triton_knn: also named in the subprocess bodies below
from immiscible_ops import knn, reference, triton_knn  # noqa: F401

scipy_stats = pytest.importorskip("scipy.stats")

CASES = [  # (B, k, trailing shape, dtype): odd sizes, D % 4 != 0, D < 4, k = 1, k not a power of 2
    (5, 7, (3, 5, 7), torch.float32),
    (3, 1, (10,), torch.float16),
    (4, 64, (2, 33), torch.bfloat16),
    (2, 3, (3,), torch.float32),
    (7, 17, (1, 9, 9), torch.float32),
]


def fresh_seed() -> int:
    return int(torch.randint(0, 2**62, (1,)).item())


def run_interpreted(body: str) -> str:
    return run_knn_interpreted(body, timeout=300)


def test_reference_philox_equals_triton_randn4x():
    out = run_interpreted(f"""
        import triton, triton.language as tl

        @triton.jit
        def kernel(out, seed, N: tl.constexpr):
            o = tl.arange(0, N)
            a, b, c, d = tl.randn4x(seed, o)
            tl.store(out + o, a); tl.store(out + N + o, b)
            tl.store(out + 2 * N + o, c); tl.store(out + 3 * N + o, d)

        seed = {fresh_seed()}
        got = torch.empty(4 * 128)
        kernel[(1,)](got, seed, N=128)
        with np.errstate(over="ignore"):
            r = reference.philox4x32(np.arange(128, dtype=np.uint32), 0, 0, 0, seed & 0xFFFFFFFF, seed >> 32)
        u = [reference._uniform(v) for v in r]
        want = np.concatenate(reference._box_muller(u[0], u[1]) + reference._box_muller(u[2], u[3]))
        assert np.array_equal(got.numpy(), want), np.abs(got.numpy() - want).max()
        print("ok")
    """)
    assert out.strip() == "ok"


def test_kernel_equals_reference_interpreted():
    out = run_interpreted(f"""
        cases = {[(b, k, s, str(d).split(".")[1]) for b, k, s, d in CASES]}
        for b, k, shape, dt in cases:
            x = (torch.randn(b, *shape) * 1.7 + 0.3).to(getattr(torch, dt))
            seed = int(torch.randint(0, 2**62, (1,)).item())
            noise, index = triton_knn.knn_noise_triton(x, k, seed)
            ref_noise, ref_index = reference.knn_noise_reference(x, k, seed)
            assert noise.dtype == x.dtype and noise.shape == x.shape
            assert torch.equal(index, ref_index), (b, k, shape, dt, index, ref_index)
            assert torch.equal(noise.view(torch.uint8), ref_noise.view(torch.uint8)), (b, k, shape, dt)
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.parametrize("b,k,shape,dtype", CASES)
def test_reference_equals_naive_argmin(b, k, shape, dtype):
    x = (torch.randn(b, *shape) * 2.0).to(dtype)
    seed = fresh_seed()
    noise, index = reference.knn_noise_reference(x, k, seed)
    d = x[0].numel()
    cand = reference.candidate_noise(seed, torch.arange(b * k), d).reshape(b, k, d)
    naive = torch.cdist(x.reshape(b, 1, d).double(), cand.double()).squeeze(1).argmin(-1)
    assert torch.equal(index, naive)
    want = cand[torch.arange(b), naive].to(dtype).reshape(x.shape)
    assert torch.equal(noise, want)


def test_candidates_are_standard_normal():
    seed, k, d = fresh_seed(), 16, 1023
    cand = reference.candidate_noise(seed, torch.arange(6 * k), d).double()
    flat = cand.flatten()
    n = flat.numel()
    assert abs(flat.mean().item()) < 5 / n**0.5
    assert abs(flat.var().item() - 1) < 5 * (2 / n) ** 0.5
    assert scipy_stats.kstest(flat.numpy(), "norm").pvalue > 1e-4
    # Every candidate on its own, and each of the four Box-Muller streams (element // ceil(d/4)).
    assert (cand.mean(1).abs() < 5 / d**0.5).all()
    assert ((cand.var(1) - 1).abs() < 6 * (2 / d) ** 0.5).all()
    groups = -(-d // 4)
    for j in range(4):
        stream = cand[:, j * groups:(j + 1) * groups]
        assert scipy_stats.kstest(stream.flatten().numpy(), "norm").pvalue > 1e-4
    # Neighbouring candidates and elements are uncorrelated.
    c = torch.corrcoef(torch.stack([cand[:-1].flatten(), cand[1:].flatten()]))[0, 1]
    assert abs(c.item()) < 5 / n**0.5
    c = torch.corrcoef(torch.stack([cand[:, :-1].flatten(), cand[:, 1:].flatten()]))[0, 1]
    assert abs(c.item()) < 5 / n**0.5


def test_knn_noise_reproducible_and_closer():
    x = torch.randn(9, 3, 5, 5)
    a = knn.knn_noise(x, 8, generator=torch.Generator().manual_seed(11))
    b = knn.knn_noise(x, 8, generator=torch.Generator().manual_seed(11))
    c = knn.knn_noise(x, 8, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = torch.randn_like(x)
    assert (x - a).square().sum() < (x - plain).square().sum()
    assert torch.equal(knn.knn_noise(x, 1, seed=5), reference.candidate_noise(5, torch.arange(9), 75).reshape(x.shape))


def test_materialized_baseline_takes_nearest_of_its_candidates():
    x = torch.randn(6, 2, 7)
    out = reference.knn_noise_materialized(x, 5, generator=torch.Generator().manual_seed(3))
    cand = torch.randn((6, 5, 14), generator=torch.Generator().manual_seed(3))
    best = (x.reshape(6, 1, 14) - cand).square().sum(-1).argmin(-1)
    assert torch.equal(out, cand[torch.arange(6), best].reshape(x.shape))


@pytest.mark.parametrize("k", [0, -2, 1.5, True])
def test_bad_k(k):
    with pytest.raises(ValueError, match="k:"):
        knn.knn_noise(torch.randn(3, 4), k)


def test_bad_x():
    with pytest.raises(ValueError, match="x:"):
        knn.knn_noise(torch.ones(3, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="seed:"):
        reference.knn_noise_reference(torch.randn(3, 4), 2, -1)


def test_empty_batch():
    noise, index = knn.knn_noise(torch.randn(0, 3), 4, return_index=True)
    assert noise.shape == (0, 3) and index.shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("b,k,shape,dtype", CASES + [(64, 64, (4, 32, 32), torch.float16)])
def test_kernel_matches_reference_cuda(b, k, shape, dtype):
    x = torch.randn(b, *shape).to(dtype)
    seed = fresh_seed()
    noise, index = triton_knn.knn_noise_triton(x.cuda(), k, seed)
    ref_noise, ref_index = reference.knn_noise_reference(x, k, seed)
    # Same Philox stream; the GPU's log/cos/sin may differ in the last ulps, so a near-tie can
    # flip. Require agreement wherever the reference's best two are not within 1e-3.
    d = x[0].numel()
    cand = reference.candidate_noise(seed, torch.arange(b * k), d).reshape(b, k, d)
    dist = (x.reshape(b, 1, d).double() - cand.double()).square().sum(-1)
    gap = dist.topk(min(2, k), largest=False).values
    clear = (gap[:, -1] - gap[:, 0] > 1e-3) if k > 1 else torch.ones(b, dtype=torch.bool)
    assert torch.equal(index.cpu()[clear], ref_index[clear])
    torch.testing.assert_close(noise.cpu()[clear].float(), ref_noise[clear].float(),
                               atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-5)


def test_fused_kernel_without_triton_names_the_install():
    # A fresh interpreter in which triton cannot be imported: the package still loads (CUDA knn
    # falls back to the reference), the kernel's module names the pip line.
    import subprocess
    import sys

    code = ("import sys; sys.modules['triton'] = None\n"
            "import immiscible_ops\n"
            "try:\n"
            "    import immiscible_ops.triton_knn\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pip install triton" in result.stdout
