"""pytest-benchmark suite (not part of the test run): `python -m pytest benchmarks/ --benchmark-only`.

Every contender gets the same seeded cost; compare with --benchmark-group-by=param:case.
"""

import numpy as np
import pytest
import torch

import immiscible_ops as io
from immiscible_ops.bench import contenders, immiscible_cost

CASES = {"immiscible_512x4096": (512, 4096), "immiscible_2048x4096": (2048, 4096),
         "immiscible_4096x1024": (4096, 1024)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return request.param, immiscible_cost(*CASES[request.param]).numpy()


@pytest.mark.parametrize("solver", ["immiscible_ops", "scipy", "lap.lapjv", "lapjv", "fastlap"])
def test_single_problem(benchmark, case, solver):
    name, cost = case
    solve = contenders().get(solver)
    if solve is None:
        pytest.skip(f"{solver} not installed")
    benchmark.group = name
    cols = benchmark(solve, cost)
    assert len(np.unique(cols)) == cost.shape[0]


@pytest.mark.parametrize("solver", ["immiscible_ops", "scipy", "lap.lapjv"])
def test_batched_64x256(benchmark, solver):
    cost = torch.rand(64, 256, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    benchmark.group = "batched_64x256"
    if solver == "immiscible_ops":
        benchmark(io.linear_assignment, cost)
        return
    solve = contenders().get(solver)
    if solve is None:
        pytest.skip(f"{solver} not installed")
    arrays = [c.numpy() for c in cost]
    benchmark(lambda: [solve(a) for a in arrays])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "fp8"])
def test_assign_end_to_end(benchmark, precision):
    g = torch.Generator().manual_seed(0)
    x, noise = 0.5 * torch.randn(512, 4096, generator=g), torch.randn(512, 4096, generator=g)
    benchmark.group = "assign_512x4096"
    idx = benchmark(io.assign, x, noise, precision=precision)
    assert idx.unique().numel() == 512
