"""assign and immiscible_noise: optimal pairing of images with noise, pools, class groups."""

import pytest
import torch
from conftest import scipy_optimum

import immiscible_ops as io
from immiscible_ops.reference import assignment_cost


@pytest.mark.parametrize("metric", ["l2", "sqeuclidean", "l1"])
@pytest.mark.parametrize("batch,pool", [(1, 1), (32, 32), (45, 45), (20, 80)])
def test_assign_is_optimal(metric, batch, pool, gen):
    x = 0.5 * torch.randn(batch, 3, 5, 5, generator=gen)
    noise = torch.randn(pool, 3, 5, 5, generator=gen)
    idx = io.assign(x, noise, metric=metric, precision="fp32")
    assert idx.shape == (batch,) and idx.unique().numel() == batch
    cost = io.pairwise_distance(x.flatten(1), noise.flatten(1), metric=metric)
    assert assignment_cost(cost, idx).item() == pytest.approx(scipy_optimum(cost), rel=1e-9)


def test_assign_reduces_distance_vs_random(gen):
    x = 0.5 * torch.randn(128, 256, generator=gen)
    noise = torch.randn(128, 256, generator=gen)
    idx = io.assign(x, noise)
    assigned = (x - noise[idx]).norm(dim=1).mean()
    unassigned = (x - noise).norm(dim=1).mean()
    assert assigned < unassigned


@pytest.mark.parametrize("pool", [30, 47, 120])
def test_groups_stay_within_their_share(pool, gen):
    b = 30
    x = torch.randn(b, 16, generator=gen)
    noise = torch.randn(pool, 16, generator=gen)
    groups = torch.randint(0, 4, (b,), generator=gen)
    idx = io.assign(x, noise, groups=groups, precision="fp32")
    assert idx.unique().numel() == b
    allowed = io.ops.group_mask(groups, pool)
    assert allowed[torch.arange(b), idx].all()
    # The groups split the pool: each noise has one owner group, with at least one noise per image.
    owned = 0
    for g in groups.unique():
        rows = allowed[groups == g]
        assert bool((rows == rows[0]).all())
        assert rows[0].sum() >= rows.shape[0]
        owned += int(rows[0].sum())
    assert owned == pool


def test_groups_optimal_within_group(gen):
    x = torch.randn(24, 8, generator=gen)
    noise = torch.randn(24, 8, generator=gen)
    groups = torch.arange(24) % 3
    idx = io.assign(x, noise, groups=groups, precision="fp32")
    cost = io.pairwise_distance(x, noise).masked_fill(~io.ops.group_mask(groups, 24), float("inf"))
    assert assignment_cost(cost, idx).item() == pytest.approx(scipy_optimum(cost), rel=1e-9)


def test_single_group_equals_plain_assign(gen):
    x, noise = torch.randn(20, 8, generator=gen), torch.randn(26, 8, generator=gen)
    plain = io.assign(x, noise, precision="fp32")
    grouped = io.assign(x, noise, precision="fp32", groups=torch.zeros(20, dtype=torch.int32))
    assert torch.equal(plain, grouped)


def test_empty_batch():
    idx = io.assign(torch.empty(0, 4), torch.randn(3, 4))
    assert idx.shape == (0,) and idx.dtype == torch.long


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_immiscible_noise_like_x(dtype, gen):
    x = (0.5 * torch.randn(16, 3, 8, 8, generator=gen)).to(dtype)
    noise = io.immiscible_noise(x, generator=torch.Generator().manual_seed(5))
    assert noise.shape == x.shape and noise.dtype == dtype
    again = io.immiscible_noise(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noise, again)
    # Same multiset of draws as plain noise from that seed, only permuted.
    plain = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    assert torch.equal(noise.flatten(1).sum(1).sort().values, plain.flatten(1).sum(1).sort().values)
