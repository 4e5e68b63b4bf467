"""Shared fixtures: fresh random inputs every run, with the seed printed on failure."""

import os

import torch

# Without a GPU, the Triton kernels run through Triton's interpreter on CPU tensors. The flag is
# read when triton is first imported (by immiscible_ops), so it is set here, before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def gen(request):
    """A torch.Generator seeded from os.urandom (set IMMISCIBLE_TEST_SEED to replay a failure)."""
    seed = int(os.environ.get("IMMISCIBLE_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    request.node.user_properties.append(("seed", seed))
    g = torch.Generator().manual_seed(seed)
    return g


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"IMMISCIBLE_TEST_SEED={value} reproduces this run"))


def scipy_optimum(cost: torch.Tensor) -> float:
    """scipy's optimal total on a 2-D cost (float64), the ground truth every solver is held to."""
    from scipy.optimize import linear_sum_assignment

    c = cost.double().numpy()
    rows, cols = linear_sum_assignment(c)
    return float(c[rows, cols].sum())


def assert_valid_assignment(row_to_col: torch.Tensor, n: int, m: int) -> None:
    """row_to_col [..., n]: indices in [0, m), distinct within each problem."""
    assert row_to_col.dtype == torch.long
    assert row_to_col.shape[-1] == n
    flat = row_to_col.reshape(-1, n)
    assert bool(((flat >= 0) & (flat < m)).all())
    for r in flat:
        assert r.unique().numel() == n


def make_cost(kind: str, n: int, m: int, gen: torch.Generator) -> torch.Tensor:
    """Fresh float64 cost [n, m] of a named family."""
    if kind == "uniform":
        return torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "integer_ties":
        return torch.randint(0, 4, (n, m), generator=gen).double()
    if kind == "all_equal":
        return torch.full((n, m), 3.25, dtype=torch.float64)
    if kind == "offset":
        return 1e4 + 1e-3 * torch.rand(n, m, generator=gen, dtype=torch.float64)
    if kind == "negative":
        return -5.0 + torch.randn(n, m, generator=gen, dtype=torch.float64)
    if kind == "l2_highdim":
        x = 0.5 * torch.randn(n, 512, generator=gen, dtype=torch.float64)
        z = torch.randn(m, 512, generator=gen, dtype=torch.float64)
        return torch.cdist(x, z)
    if kind == "large_range":
        return torch.exp(20 * torch.rand(n, m, generator=gen, dtype=torch.float64))
    raise KeyError(kind)


@pytest.fixture(scope="session")
def np_rng():
    return np.random.default_rng()
