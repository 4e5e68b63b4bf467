"""The fused KNN kernel past one candidate tile (k > 512): same winners as the reference.

k beyond _KNN_MAX_K_TILE runs the kernel's loop over candidate tiles (before, one [k, BLOCK] tile
in registers, which spilled: docs/GPU.md "Resources"); these check the loop and its tie rule.
"""


import pytest
import torch
from conftest import run_knn_interpreted

# reference and triton_knn: also named in the subprocess bodies below
from immiscible_ops import knn, reference, triton_knn  # noqa: F401

pytest.importorskip("triton")


def run_interpreted(body: str) -> str:
    return run_knn_interpreted(body, timeout=600)


@pytest.mark.parametrize("k", [1, 2, 3, 7, 64, 100, 511, 512, 513, 1000, 1024, 4096, 2**20])
def test_tile_stays_bounded(k):
    k_tile, block = triton_knn._knn_tile(k)
    assert k_tile & (k_tile - 1) == 0 and 2 <= k_tile <= 512
    assert 4 <= block <= 32 and k_tile * block <= 2048
    k_pad = max(2, 1 << (k - 1).bit_length())
    if k <= 512:  # unchanged below one tile: one tile covering every candidate
        assert (k_tile, block) == (k_pad, max(4, min(32, 2048 // k_pad)))
    else:
        assert (k_tile, block) == (512, 4)


def test_kernel_equals_reference_past_one_tile():
    seed = int(torch.randint(0, 2**62, (1,)).item())
    out = run_interpreted(f"""
        # k: one tile and a 1-candidate tail, exactly two tiles, a ragged third tile; D % 4 != 0.
        for b, k, shape, dt in [(3, 513, (7,), torch.float32), (2, 1024, (2, 5), torch.float16),
                                (4, 1100, (9,), torch.bfloat16)]:
            x = (torch.randn(b, *shape) * 1.3 - 0.2).to(dt)
            noise, index = triton_knn.knn_noise_triton(x, k, {seed} + k)
            ref_noise, ref_index = reference.knn_noise_reference(x, k, {seed} + k)
            assert torch.equal(index, ref_index), (k, index, ref_index)
            assert torch.equal(noise.view(torch.uint8), ref_noise.view(torch.uint8)), k
        print("ok")
    """)
    assert out.strip() == "ok"


def test_ties_across_tiles_keep_the_lowest_candidate():
    # x = +inf: every candidate is at distance inf, an exact tie over all three tiles; argmin
    # over all k at once (the reference) picks candidate 0, so the later tiles must not take over.
    out = run_interpreted("""
        x = torch.full((3, 6), float("inf"))
        noise, index = triton_knn.knn_noise_triton(x, 1200, 12345)
        ref_noise, ref_index = reference.knn_noise_reference(x, 1200, 12345)
        assert index.tolist() == [0, 0, 0] == ref_index.tolist(), index
        assert torch.equal(noise, ref_noise)
        print("ok")
    """)
    assert out.strip() == "ok"
