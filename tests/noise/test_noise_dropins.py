"""immiscible_noise as a drop-in for other trainers' code: the caller's knn candidates (bit for bit
the torch recipe of kohya-ss and OneTrainer), x's memory format kept, pools of any size, and
scope="global" without a process group (or with one process) being the local solve."""

import datetime
import socket

import pytest
import torch
import torch.distributed as dist

from immiscible_ops import assign, immiscible_noise, knn

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, k, trailing shape): odd sizes, k = 1, k not a power of 2, latents-like
KNN_CASES = [(5, 3, (3, 5, 7)), (1, 8, (4, 8, 8)), (6, 1, (11,)), (4, 17, (2, 9, 9)),
             (8, 8, (4, 16, 16))]


def fresh(shape, gen, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale + 0.2).to(dtype)


def recipe_nearest(x, c, dt=None):
    """The plain torch recipe: flatten, subtract in one call over [B, k, D], norm, argmin."""
    xf, cf = x.flatten(1), c.flatten(2)
    if dt is not None:
        xf, cf = xf.to(dt), cf.to(dt)
    d = torch.linalg.vector_norm(xf.unsqueeze(1) - cf, dim=2)
    return c[torch.arange(len(x)), d.argmin(1)], d


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,k,shape", KNN_CASES)
def test_candidates_bit_for_bit_the_recipe(gen, dtype, b, k, shape):
    x = fresh((b, *shape), gen, dtype, scale=0.7)
    c = torch.randn((b, k, *shape), generator=gen).to(dtype)
    want, d = recipe_nearest(x, c)
    got, index = knn.select_nearest(x, c, return_index=True)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert torch.equal(got, want)
    assert torch.equal(immiscible_noise(x, method="knn", candidates=c), want)
    # The chosen candidate is the caller's own tensor row, untouched.
    assert torch.equal(c[torch.arange(b), index], got)
    if k > 1:  # lowest index among the tied minima
        dmin = d.min(1, keepdim=True).values
        first = torch.where(d == dmin, torch.arange(k), k).min(1).values
        assert torch.equal(index, first)


@pytest.mark.parametrize("dtype", DTYPES)
def test_candidates_equal_the_per_candidate_norm_loop(gen, dtype):
    # c[i][j].sub(x[i]).norm(): the same norms at these sizes (one candidate of 4096 elements is
    # below the size at which torch splits a single fp16 reduction over threads).
    x = fresh((6, 4, 32, 32), gen, dtype)
    c = torch.randn((6, 5, 4, 32, 32), generator=gen).to(dtype)
    d = torch.stack([torch.stack([c[i][j].sub(x[i]).norm() for j in range(5)]) for i in range(6)])
    want = c[torch.arange(6), d.argmin(1)]
    assert torch.equal(immiscible_noise(x, method="knn", candidates=c), want)


def test_bf16_norms_tie_and_the_first_wins(gen):
    # bf16 norms of 16x64x64 latents round to steps of 2 near 362: most rows hold ties.
    x = fresh((8, 16, 64, 64), gen, torch.bfloat16)
    c = torch.randn((8, 8, 16, 64, 64), generator=gen, dtype=torch.bfloat16)
    want, d = recipe_nearest(x, c)
    assert any(len(set(row.tolist())) < 8 for row in d)
    assert torch.equal(immiscible_noise(x, method="knn", candidates=c), want)


@pytest.mark.parametrize("x_dtype,c_dtype,dt", [
    (torch.bfloat16, torch.bfloat16, torch.float32),  # kohya-ss PR #2374 (as read): fp32 norms
    (torch.bfloat16, torch.bfloat16, torch.float16),  # OneTrainer PR #1260 (as read): fp16 norms
    (torch.float32, torch.float32, torch.float16),
    (torch.float16, torch.float32, None),             # promoted: float32
    (torch.float32, torch.bfloat16, None),
])
def test_distance_dtype(gen, x_dtype, c_dtype, dt):
    x = fresh((7, 3, 8, 8), gen, x_dtype)
    c = torch.randn((7, 6, 3, 8, 8), generator=gen).to(c_dtype)
    chosen, _ = recipe_nearest(x, c, dt or torch.promote_types(x_dtype, c_dtype))
    got = immiscible_noise(x, method="knn", candidates=c, distance_dtype=dt)
    assert got.dtype == x_dtype
    assert torch.equal(got, chosen.to(x_dtype))


def test_onetrainer_torch_min_is_argmin(gen):
    # OneTrainer's recipe takes torch.min(distance, dim=1); it resolves ties as argmin does.
    x = fresh((8, 4, 16, 16), gen, torch.bfloat16)
    c = torch.randn((8, 8, 4, 16, 16), generator=gen, dtype=torch.bfloat16)
    d = torch.linalg.vector_norm(x.flatten(1).half().unsqueeze(1) - c.flatten(2).half(), dim=2)
    _, idx = torch.min(d, dim=1)
    got = immiscible_noise(x, method="knn", candidates=c, distance_dtype=torch.float16)
    assert torch.equal(got, c[torch.arange(8), idx])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_default_draws_the_recipes_candidates(dtype):
    x = fresh((6, 4, 8, 8), torch.Generator().manual_seed(1), dtype)
    c = torch.randn((6, 8, 4, 8, 8), generator=torch.Generator().manual_seed(7), dtype=dtype)
    want, _ = recipe_nearest(x, c)
    got = immiscible_noise(x, method="knn", generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    got = immiscible_noise(x, method="knn", k=8, generator=torch.Generator().manual_seed(7),
                           distance_dtype=torch.float64)
    assert torch.equal(got, recipe_nearest(x, c, torch.float64)[0])


def test_knn_reproduces_a_global_rng_run(gen):
    # kohya-ss draws from torch's global generator: seed it, then draw as they do.
    x = fresh((4, 4, 8, 8), gen)
    torch.manual_seed(1234)
    c = torch.randn((4, 5, 4, 8, 8), dtype=x.dtype)
    want, _ = recipe_nearest(x, c)
    torch.manual_seed(1234)
    got = immiscible_noise(x, method="knn", k=5)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kwargs,name", [
    (dict(method="assign"), "candidates"),
    (dict(method="knn", k=3), "k"),
    (dict(method="knn", distance_dtype=torch.int32), "distance_dtype"),
    (dict(method="knn", distance_dtype="float16"), "distance_dtype"),
])
def test_candidate_argument_errors(gen, kwargs, name):
    x = fresh((4, 2, 3), gen)
    c = torch.randn(4, 5, 2, 3)
    with pytest.raises(ValueError, match=f"^{name}:"):
        immiscible_noise(x, candidates=c, **kwargs)


@pytest.mark.parametrize("c", [torch.randn(4, 5, 2), torch.randn(3, 5, 2, 3), torch.randn(4, 5, 3, 2),
                               torch.randn(4, 0, 2, 3), torch.ones(4, 5, 2, 3, dtype=torch.long),
                               "noise"])
def test_bad_candidates(gen, c):
    with pytest.raises(ValueError, match="^candidates:"):
        immiscible_noise(fresh((4, 2, 3), gen), method="knn", candidates=c)


def test_distance_dtype_needs_knn(gen):
    with pytest.raises(ValueError, match="^distance_dtype:"):
        immiscible_noise(fresh((4, 3), gen), distance_dtype=torch.float16)
    with pytest.raises(ValueError, match="^distance_dtype:"):
        immiscible_noise(fresh((4, 3), gen), method="knn", distance_dtype=torch.long)


def test_empty_candidates():
    x = torch.randn(0, 3, 4)
    assert immiscible_noise(x, method="knn", candidates=torch.randn(0, 2, 3, 4)).shape == (0, 3, 4)


# ---------------------------------------------------------------------------------------------
# memory format

LAYOUTS = [
    ((5, 3, 6, 7), torch.channels_last),
    ((3, 2, 4, 5, 6), torch.channels_last_3d),
]


@pytest.mark.parametrize("method", ["assign", "pool", "knn", "flip", "none"])
@pytest.mark.parametrize("shape,fmt", LAYOUTS)
def test_memory_format_kept(gen, method, shape, fmt):
    x = fresh(shape, gen)
    xl = x.contiguous(memory_format=fmt)
    a = immiscible_noise(x, method=method, generator=torch.Generator().manual_seed(3))
    b = immiscible_noise(xl, method=method, generator=torch.Generator().manual_seed(3))
    assert b.is_contiguous(memory_format=fmt) and not b.is_contiguous()
    assert torch.equal(a, b)  # same values, x's layout
    assert b.stride() == torch.randn_like(xl).stride()


def test_permuted_and_strided_inputs(gen):
    base = fresh((6, 5, 4, 3), gen)
    x = base.permute(0, 3, 1, 2)  # dense, no named format
    got = immiscible_noise(x, generator=torch.Generator().manual_seed(4))
    assert got.stride() == x.stride()
    assert torch.equal(got, immiscible_noise(x.contiguous(), generator=torch.Generator().manual_seed(4)))
    sliced = base[:, ::2]  # not dense: comes back contiguous, as randn_like would
    got = immiscible_noise(sliced, generator=torch.Generator().manual_seed(4))
    assert got.is_contiguous() and got.shape == sliced.shape


def test_knn_candidates_keep_channels_last(gen):
    x = fresh((4, 3, 5, 5), gen).contiguous(memory_format=torch.channels_last)
    c = torch.randn(4, 6, 3, 5, 5)
    got = immiscible_noise(x, method="knn", candidates=c)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, recipe_nearest(x, c)[0])


# ---------------------------------------------------------------------------------------------
# pools of any size


@pytest.mark.parametrize("b,pool_size", [(7, 7), (7, 8), (7, 11), (5, 23), (1, 3)])
def test_pool_size_any_k(gen, b, pool_size):
    x = fresh((b, 3, 4), gen)
    pool = torch.randn((pool_size, 3, 4), generator=torch.Generator().manual_seed(9))
    got = immiscible_noise(x, method="pool", pool_size=pool_size,
                           generator=torch.Generator().manual_seed(9))
    assert torch.equal(got, pool[assign(x, pool)])
    # pool_size wins over pool_factor; pool_factor alone is unchanged
    assert torch.equal(immiscible_noise(x, method="pool", pool_size=pool_size, pool_factor=5,
                                        generator=torch.Generator().manual_seed(9)), got)
    pool2 = torch.randn((3 * b, 3, 4), generator=torch.Generator().manual_seed(9))
    assert torch.equal(immiscible_noise(x, method="pool", pool_factor=3,
                                        generator=torch.Generator().manual_seed(9)),
                       pool2[assign(x, pool2)])


def test_pool_size_with_groups(gen):
    x = fresh((9, 4), gen)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1])
    pool = torch.randn((14, 4), generator=torch.Generator().manual_seed(2))
    got = immiscible_noise(x, method="pool", pool_size=14, groups=labels,
                           generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, pool[assign(x, pool, groups=labels)])


@pytest.mark.parametrize("kwargs", [dict(method="pool", pool_size=4), dict(method="pool", pool_size=0),
                                    dict(method="pool", pool_size=7.0), dict(method="assign", pool_size=9),
                                    dict(method="knn", pool_size=9)])
def test_bad_pool_size(gen, kwargs):
    with pytest.raises(ValueError, match="^pool_size:"):
        immiscible_noise(fresh((5, 3), gen), **kwargs)


# ---------------------------------------------------------------------------------------------
# scope="global" on one process


@pytest.mark.parametrize("kwargs", [dict(), dict(method="pool", pool_factor=3),
                                    dict(method="pool", pool_size=10), dict(method="flip"),
                                    dict(method="knn", k=4), dict(method="none"),
                                    dict(cost_precision="fp16"), dict(cost_precision="bf16", precision="fp32")])
def test_global_without_process_group_is_local(gen, kwargs):
    assert not dist.is_initialized()
    x = fresh((6, 2, 5), gen)
    local_kwargs = {k: v for k, v in kwargs.items() if k != "cost_precision"}
    want = immiscible_noise(x, generator=torch.Generator().manual_seed(5), **local_kwargs)
    got = immiscible_noise(x, scope="global", generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(got, want)


def test_global_fallback_still_checks_arguments(gen):
    x = fresh((6, 5), gen)
    with pytest.raises(ValueError, match="^cost_precision:"):
        immiscible_noise(x, scope="global", cost_precision="fp8")
    with pytest.raises(ValueError, match="^metrc:"):
        immiscible_noise(x, scope="global", metrc="l2")
    with pytest.raises(ValueError, match="^cost_precision:"):
        immiscible_noise(x, cost_precision="fp16")  # local scope: no traffic to save


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_global_with_world_size_one_is_local(gen):
    x = fresh((5, 3, 4, 4), gen)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=30))
    try:
        for kwargs in (dict(), dict(method="pool", pool_size=8), dict(method="flip")):
            want = immiscible_noise(x, generator=torch.Generator().manual_seed(6), **kwargs)
            got = immiscible_noise(x, scope="global", generator=torch.Generator().manual_seed(6),
                                   cost_precision="fp16", **kwargs)
            assert torch.equal(got, want)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_candidates_on_cuda_are_the_recipe_there(gen, dtype):
    x = fresh((6, 4, 16, 16), gen, dtype).cuda().contiguous(memory_format=torch.channels_last)
    c = torch.randn((6, 8, 4, 16, 16), generator=gen).to(dtype).cuda()
    got = immiscible_noise(x, method="knn", candidates=c)
    assert got.is_cuda and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, recipe_nearest(x, c)[0])
    # distance_dtype without candidates: torch.randn candidates from the CUDA generator
    g = torch.Generator(device="cuda").manual_seed(3)
    want = recipe_nearest(x, torch.randn((6, 8, 4, 16, 16), generator=g, device="cuda", dtype=dtype),
                          torch.float32)[0]
    got = immiscible_noise(x, method="knn", generator=torch.Generator(device="cuda").manual_seed(3),
                           distance_dtype=torch.float32)
    assert torch.equal(got, want)
