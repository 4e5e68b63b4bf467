"""immiscible_noise: every method against its definition on the same seeded draws."""

import pytest
import torch

from immiscible_ops import assign, immiscible_noise, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(7, 3, 5, 5), (6, 4, 8, 8), (1, 2, 3), (5, 11)]  # odd images, latents, B = 1, flat


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fresh(shape, dtype=torch.float32) -> torch.Tensor:
    return (torch.randn(shape) * 1.3 + 0.2).to(dtype)


def total_cost(x, noise, precision="fp16") -> float:
    b = x.shape[0]
    d = reference.pairwise_distance(x.reshape(b, -1), noise.reshape(b, -1), "l2", precision)
    return d.diagonal().double().sum().item()


def sorted_rows(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(t.shape[0], -1).float()
    return flat[torch.argsort(flat[:, 0])]


@pytest.mark.parametrize("method", ["assign", "pool", "knn", "flip", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_dtype_reproducible(method, dtype, shape):
    x = fresh(shape, dtype)
    a = immiscible_noise(x, method=method, generator=gen(5), k=3, pool_factor=3)
    b = immiscible_noise(x, method=method, generator=gen(5), k=3, pool_factor=3)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b)
    assert torch.isfinite(a.float()).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_assign_is_default_and_matches_definition(shape):
    x = fresh(shape)
    noise = torch.randn(shape, generator=gen(1))
    want = noise[assign(x, noise)]
    assert torch.equal(immiscible_noise(x, generator=gen(1)), want)
    assert torch.equal(immiscible_noise(x, method="assign", generator=gen(1)), want)


def test_none_is_plain_randn():
    x = fresh((7, 3, 4))
    assert torch.equal(immiscible_noise(x, method="none", generator=gen(2)),
                       torch.randn(x.shape, generator=gen(2)))


@pytest.mark.parametrize("pool_factor", [1, 2, 5])
def test_pool_takes_best_of_pool(pool_factor):
    x = fresh((9, 2, 3, 5))
    pool = torch.randn((9 * pool_factor, 2, 3, 5), generator=gen(3))
    got = immiscible_noise(x, method="pool", pool_factor=pool_factor, generator=gen(3))
    assert torch.equal(got, pool[assign(x, pool)])
    # Optimal over a superset: never worse than assigning within the first B draws.
    assert total_cost(x, got) <= total_cost(x, pool[:9][assign(x, pool[:9])]) * (1 + 1e-5)


def test_flip_is_assignment_against_reversed_noise():
    x = fresh((8, 3, 5, 3))
    noise = torch.randn(x.shape, generator=gen(4))
    flipped = noise.reshape(8, -1).flip(-1).reshape(x.shape)
    got = immiscible_noise(x, method="flip", generator=gen(4))
    assert torch.equal(got, noise[assign(x, flipped)])
    assert torch.equal(sorted_rows(got), sorted_rows(noise))  # a permutation of the draws
    # The real assignment is optimal among permutations of the same draws.
    assert total_cost(x, immiscible_noise(x, generator=gen(4))) <= total_cost(x, got) * (1 + 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_on_cpu_is_the_torch_recipe(dtype):
    # CPU: k torch.randn candidates per image from the generator, the nearest in x's dtype.
    x = fresh((5, 3, 7), dtype)
    cand = torch.randn((5, 4, 3, 7), generator=gen(6), dtype=dtype)
    dist = torch.linalg.vector_norm((x.unsqueeze(1) - cand).flatten(2), dim=2)
    want = cand[torch.arange(5), dist.argmin(1)]
    assert torch.equal(immiscible_noise(x, method="knn", k=4, generator=gen(6)), want)
    assert torch.equal(immiscible_noise(x, method="knn", candidates=cand), want)


def test_knn_ignores_groups():
    x = fresh((6, 5))
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    assert torch.equal(immiscible_noise(x, method="knn", k=3, generator=gen(7), groups=labels),
                       immiscible_noise(x, method="knn", k=3, generator=gen(7)))


@pytest.mark.parametrize("method", ["assign", "pool", "flip"])
def test_groups_pass_through(method):
    x = fresh((10, 2, 3))
    labels = torch.randint(0, 3, (10,))
    pf = 2 if method == "pool" else 1
    noise = torch.randn((10 * pf, 2, 3), generator=gen(8))
    target = noise.reshape(10, -1).flip(-1).reshape(noise.shape) if method == "flip" else noise
    want = noise[assign(x, target, groups=labels)]
    got = immiscible_noise(x, method=method, pool_factor=pf, generator=gen(8), groups=labels)
    assert torch.equal(got, want)


def test_assign_kwargs_pass_through():
    x = fresh((7, 6))
    noise = torch.randn(x.shape, generator=gen(9))
    want = noise[assign(x, noise, metric="l1", precision="fp32", solver="exact")]
    got = immiscible_noise(x, generator=gen(9), metric="l1", precision="fp32", solver="exact")
    assert torch.equal(got, want)


def test_assign_closer_than_plain():
    x = fresh((32, 3, 8, 8))
    assert total_cost(x, immiscible_noise(x, generator=gen(10))) < total_cost(
        x, immiscible_noise(x, method="none", generator=gen(10)))


def test_empty_batch():
    for method in ("assign", "pool", "knn", "flip", "none"):
        assert immiscible_noise(torch.randn(0, 3), method=method).shape == (0, 3)


@pytest.mark.parametrize("kwargs,name", [
    (dict(method="bogus"), "method"),
    (dict(method="knn", k=0), "k"),
    (dict(method="knn", k=2.0), "k"),
    (dict(method="pool", pool_factor=0), "pool_factor"),
    (dict(method="pool", pool_factor=True), "pool_factor"),
    (dict(groups=torch.zeros(4, dtype=torch.long)), "groups"),
    (dict(groups=torch.zeros(5)), "groups"),
    (dict(method="pool", groups=torch.zeros(5, 1, dtype=torch.long)), "groups"),
    (dict(method="knn", metric="l1"), "metric"),
    (dict(metrc="l2"), "metrc"),
    (dict(metric="cosine"), "metric"),
    (dict(scope="world"), "scope"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        immiscible_noise(fresh((5, 3)), **kwargs)


def test_bad_x():
    with pytest.raises(ValueError, match="^x:"):
        immiscible_noise(torch.ones(4, 3, dtype=torch.long))


