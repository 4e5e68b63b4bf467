"""immiscible_ops.integrations.torchcfm against torchcfm itself, POT's ot.emd and scipy's optimum.

torchcfm's own exact-OT cases (its tests/test_optimal_transport.py and the exact_ot_cfm case of
tests/test_conditional_flow_matcher.py), rewritten here against our sampler, plus: the plan's
total equals scipy's optimum, seeded sampling gives torchcfm's pairs, the flow matchers give
torchcfm's training batches. torchcfm and POT are optional extras (installed by the README's
set-up line): their tests skip without them, except under CI=true where a missing one fails.
"""

import importlib
import os
import sys
import warnings

import numpy as np
import pytest
import torch

from immiscible_ops.integrations import torchcfm as ours

scipy_optimize = pytest.importorskip("scipy.optimize")


def optional(name):
    if os.environ.get("CI"):
        return importlib.import_module(name)  # CI installs it: missing is a failure there
    return pytest.importorskip(name)


def scipy_total(m: np.ndarray) -> float:
    r, c = scipy_optimize.linear_sum_assignment(m.astype(np.float64))
    return float(m.astype(np.float64)[r, c].sum())


def sqcost(x0, x1) -> np.ndarray:
    return (torch.cdist(x0.reshape(len(x0), -1), x1.reshape(len(x1), -1)) ** 2).numpy()


def points(gen, b, *shape):
    """b distinct random points: with duplicates several plans are optimal, and POT's pick and
    ours may differ (1-D batches of 128 collide about once in 2000 draws)."""
    while True:
        x = torch.randn(b, *shape, generator=gen)
        if torch.unique(x.reshape(b, -1), dim=0).shape[0] == b:
            return x


def seeded(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


@pytest.mark.parametrize("b", [1, 2, 7, 64, 128, 257])
@pytest.mark.parametrize("dim", [(2,), (2, 2, 2), (3, 8, 8)])
def test_plan_is_an_optimal_permutation(gen, b, dim):
    x0, x1 = points(gen, b, *dim), points(gen, b, *dim)
    pi = ours.OTPlanSampler("exact").get_map(x0, x1)
    assert pi.shape == (b, b) and pi.dtype == np.float64
    assert np.array_equal((pi > 0).sum(0), np.ones(b)) and np.array_equal((pi > 0).sum(1), np.ones(b))
    assert np.all(pi[pi > 0] == 1.0 / b)
    m = sqcost(x0, x1)
    assert (m.astype(np.float64) * (pi > 0)).sum() == pytest.approx(scipy_total(m), rel=1e-12)
    r, c = scipy_optimize.linear_sum_assignment(m)
    assert np.array_equal(np.nonzero(pi)[1], c)  # unique optimum on continuous data


def test_normalize_cost_plan_optimal_on_normalized_cost(gen):
    x0, x1 = torch.randn(33, 5, generator=gen) * 4, torch.randn(33, 5, generator=gen)
    s = ours.OTPlanSampler("exact", normalize_cost=True)
    m = s.cost(x0, x1).numpy()
    assert m.max() == 1.0
    pi = s.get_map(x0, x1)
    assert (m.astype(np.float64) * (pi > 0)).sum() == pytest.approx(scipy_total(m), rel=1e-12)


# --- torchcfm's tests/test_optimal_transport.py cases, our versions ----------------------------


def test_sample_map_without_replacement_reconstructs_a_permutation():
    b = 128
    perm_map = np.eye(b)[:, np.random.default_rng().permutation(b)]
    i, j = ours.OTPlanSampler("exact").sample_map(perm_map, batch_size=b, replace=False)
    rebuilt = np.zeros((b, b))
    rebuilt[i, j] = 1
    assert np.array_equal(rebuilt, perm_map)


def test_get_map_equals_pot_emd(gen):
    ot = optional("ot")
    for _ in range(3):
        x0, x1 = points(gen, 128, 2, 2, 2), points(gen, 128, 2, 2, 2)
        m = sqcost(x0, x1)
        assert np.array_equal(ours.OTPlanSampler("exact").get_map(x0, x1),
                              ot.emd(ot.unif(128), ot.unif(128), m))


@pytest.mark.parametrize("b", [128, 100, 64, 1])
@pytest.mark.parametrize("replace", [True, False])
def test_sample_plan_is_get_map_then_sample_map(b, replace):
    s = ours.OTPlanSampler("exact")
    for seed in (1980, 7, 12345):
        seeded(seed)
        x0, x1 = torch.randn(b, 2, 2, 2), torch.randn(b, 2, 2, 2)
        i, j = s.sample_map(s.get_map(x0, x1), batch_size=b, replace=replace)
        seeded(seed)
        x0b, x1b = torch.randn(b, 2, 2, 2), torch.randn(b, 2, 2, 2)
        got0, got1 = s.sample_plan(x0b, x1b, replace=replace)
        assert torch.equal(got0, x0[i]) and torch.equal(got1, x1[j])


def test_fast_sampling_consumes_numpys_state_as_torchcfm():
    s = ours.OTPlanSampler("exact")
    x0, x1 = torch.randn(256, 3), torch.randn(256, 3)
    for seed in range(20):
        np.random.seed(seed)
        i, j = s.sample_map(s.get_map(x0, x1), 256)
        after_dense = np.random.random_sample(4)
        np.random.seed(seed)
        got0, got1 = s.sample_plan(x0, x1)
        assert np.array_equal(np.random.random_sample(4), after_dense)
        assert torch.equal(got0, x0[i]) and torch.equal(got1, x1[j])


def test_replace_semantics(gen):
    s = ours.OTPlanSampler("exact")
    x0, x1 = torch.randn(64, 4, generator=gen), torch.randn(64, 4, generator=gen)
    pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(s.get_map(x0, x1)), strict=True)}
    y0 = torch.arange(64)
    a, b, ya, yb = s.sample_plan_with_labels(x0, x1, y0, y0 + 1000, replace=True)
    drawn = [(int(i), int(j) - 1000) for i, j in zip(ya, yb, strict=True)]
    assert set(drawn) <= pairs and len(drawn) == 64  # pairs of the plan, some repeated
    assert torch.equal(a, x0[ya]) and torch.equal(b, x1[yb - 1000])
    a, b, ya, yb = s.sample_plan_with_labels(x0, x1, y0, y0 + 1000, replace=False)
    assert {(int(i), int(j) - 1000) for i, j in zip(ya, yb, strict=True)} == pairs  # each pair once
    _, _, none0, none1 = s.sample_plan_with_labels(x0, x1)
    assert none0 is None and none1 is None


def test_sample_plan_with_scipy_keeps_order_and_shape(gen):
    x0, x1 = torch.randn(20, 3, 2, generator=gen), torch.randn(20, 3, 2, generator=gen)
    a, b = ours.OTPlanSampler("exact").sample_plan_with_scipy(x0, x1)
    _, cols = scipy_optimize.linear_sum_assignment(sqcost(x0, x1))
    assert a is x0 and torch.equal(b, x1[cols]) and b.shape == x1.shape


def test_trajectory_follows_the_plans(gen):
    X = points(gen, 32, 4, 3)
    s = ours.OTPlanSampler("exact")
    traj = s.sample_trajectory(X)
    assert isinstance(traj, np.ndarray) and traj.shape == (32, 4, 3)
    idx = np.arange(32)
    for t in range(3):
        _, cols = scipy_optimize.linear_sum_assignment(sqcost(X[:, t], X[:, t + 1]))
        idx = cols[idx]
        assert np.array_equal(traj[:, t + 1], X[:, t + 1][idx].numpy())


def test_nan_gives_uniform_plan_and_torchcfms_warning():
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    x0[1, 0] = float("nan")
    with pytest.warns(UserWarning, match="reverting to uniform plan"):
        pi = ours.OTPlanSampler("exact").get_map(x0, x1)
    assert np.array_equal(pi, np.full((6, 6), 1 / 36))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours.OTPlanSampler("exact", warn=False).get_map(x0, x1)


def test_unequal_batches_are_pots_emd():
    ot = optional("ot")
    x0, x1 = torch.randn(6, 3), torch.randn(10, 3)
    pi = ours.OTPlanSampler("exact").get_map(x0, x1)
    assert np.array_equal(pi, ot.emd(ot.unif(6), ot.unif(10), sqcost(x0, x1)))
    a, b = ours.OTPlanSampler("exact").sample_plan(x0, x1)
    assert a.shape == (6, 3) and b.shape == (6, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="^method:"):
        ours.OTPlanSampler("noname")
    with pytest.raises(ValueError, match="^solver:"):
        ours.OTPlanSampler("exact", solver="lap")
    with pytest.raises(ValueError, match="^x1:"):
        ours.OTPlanSampler("exact").assignment(torch.randn(3, 2), torch.randn(4, 2))


# --- against torchcfm itself -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [[1], [2], [1, 2], [3, 4, 5], [3, 32, 32]])
@pytest.mark.parametrize("b", [128, 96])
def test_same_pairs_as_torchcfms_sampler(gen, shape, b):
    tcfm_ot = optional("torchcfm.optimal_transport")
    x0, x1 = points(gen, b, *shape), points(gen, b, *shape)
    for replace in (True, False):
        np.random.seed(1994)
        want = tcfm_ot.OTPlanSampler(method="exact").sample_plan(x0, x1, replace=replace)
        np.random.seed(1994)
        got = ours.OTPlanSampler(method="exact").sample_plan(x0, x1, replace=replace)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    y0, y1 = torch.randint(0, 10, (b,)), torch.randint(0, 10, (b,))
    np.random.seed(3)
    want = tcfm_ot.OTPlanSampler(method="exact").sample_plan_with_labels(x0, x1, y0, y1)
    np.random.seed(3)
    got = ours.OTPlanSampler(method="exact").sample_plan_with_labels(x0, x1, y0, y1)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_same_trajectory_as_torchcfm(gen):
    tcfm_ot = optional("torchcfm.optimal_transport")
    X = points(gen, 64, 5, 2)
    np.random.seed(11)
    want = tcfm_ot.OTPlanSampler(method="exact").sample_trajectory(X)
    np.random.seed(11)
    got = ours.OTPlanSampler(method="exact").sample_trajectory(X)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("method", ["sinkhorn", "unbalanced", "partial"])
def test_entropic_methods_are_torchcfms(method):
    tcfm_ot = optional("torchcfm.optimal_transport")
    x0, x1 = torch.randn(32, 2), torch.randn(32, 2)
    want = tcfm_ot.OTPlanSampler(method=method, reg=0.5).get_map(x0, x1)
    assert np.array_equal(ours.OTPlanSampler(method=method, reg=0.5).get_map(x0, x1), want)


TEST_SEED = 1994


@pytest.mark.parametrize("sigma", [0.0, 5e-4, 0.5, 1.5, 0, 1])
@pytest.mark.parametrize("shape", [[1], [2], [1, 2], [3, 4, 5]])
def test_exact_ot_flow_matcher(gen, sigma, shape):
    """torchcfm's test_fm for exact_ot_cfm: the flow matcher's xt, ut and eps are recomputed from
    the plan sampler under the same seeds; and they equal torchcfm's own (POT-planned) class."""
    cfm = optional("torchcfm.conditional_flow_matching")
    FM = ours.ExactOptimalTransportConditionalFlowMatcher(sigma=sigma)
    assert isinstance(FM, cfm.ExactOptimalTransportConditionalFlowMatcher)
    x0, x1 = points(gen, 128, *shape), points(gen, 128, *shape)
    seeded(TEST_SEED)
    t, xt, ut, eps = FM.sample_location_and_conditional_flow(x0, x1, return_noise=True)
    seeded(TEST_SEED)
    p0, p1 = ours.OTPlanSampler(method="exact").sample_plan(x0, x1)
    torch.manual_seed(TEST_SEED)
    t_given = torch.rand(128)
    tp = t_given.reshape(-1, *([1] * (p0.dim() - 1)))
    epsilon = torch.randn_like(p0)
    assert torch.equal(t, t_given) and torch.equal(eps, epsilon)
    assert torch.equal(ut, p1 - p0)
    assert torch.equal(xt, tp * p1 + (1 - tp) * p0 + sigma * epsilon)
    # torchcfm's own class, plan from POT: the same batch
    seeded(TEST_SEED)
    want = cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=sigma).sample_location_and_conditional_flow(
        x0, x1, return_noise=True)
    assert [torch.equal(g, w) for g, w in zip((t, xt, ut, eps), want, strict=True)] == [True] * 4


def test_guided_and_one_line_swap(gen):
    cfm = optional("torchcfm.conditional_flow_matching")
    x0, x1 = points(gen, 64, 3, 4), points(gen, 64, 3, 4)
    y0, y1 = torch.randint(0, 5, (64,)), torch.randint(0, 5, (64,))
    theirs = cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)
    swapped = cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)
    swapped.ot_sampler = ours.OTPlanSampler("exact")  # the documented one-liner
    for fm in (swapped, ours.ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)):
        seeded(5)
        got = fm.guided_sample_location_and_conditional_flow(x0, x1, y0, y1, return_noise=True)
        seeded(5)
        want = theirs.guided_sample_location_and_conditional_flow(x0, x1, y0, y1, return_noise=True)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("ot_method", ["exact", "sinkhorn"])
def test_schrodinger_bridge(gen, ot_method):
    cfm = optional("torchcfm.conditional_flow_matching")
    x0, x1 = points(gen, 32, 2), points(gen, 32, 2)
    fm = ours.SchrodingerBridgeConditionalFlowMatcher(sigma=1.0, ot_method=ot_method)
    assert isinstance(fm.ot_sampler, ours.OTPlanSampler)
    seeded(2)
    got = fm.sample_location_and_conditional_flow(x0, x1, return_noise=True)
    seeded(2)
    want = cfm.SchrodingerBridgeConditionalFlowMatcher(sigma=1.0, ot_method=ot_method) \
        .sample_location_and_conditional_flow(x0, x1, return_noise=True)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    with pytest.raises(ValueError):
        ours.SchrodingerBridgeConditionalFlowMatcher(sigma=0.0)


def test_optimal_at_a_larger_batch(gen):
    # POT's iteration cap binds at B=2048 (docs/PERF.md); CI-sized here: the optimum at 512.
    x0, x1 = torch.randn(512, 3, 8, 8, generator=gen), torch.randn(512, 3, 8, 8, generator=gen)
    pi = ours.OTPlanSampler("exact").get_map(x0, x1)
    m = sqcost(x0, x1)
    assert (m.astype(np.float64) * (pi > 0)).sum() == pytest.approx(scipy_total(m), rel=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", ["exact", "auto"])
def test_cuda_inputs(gen, solver):
    x0, x1 = points(gen, 256, 3, 8, 8), points(gen, 256, 3, 8, 8)
    s = ours.OTPlanSampler("exact", solver=solver)
    a, b = s.sample_plan(x0.cuda(), x1.cuda())
    assert a.is_cuda and b.is_cuda and a.shape == x0.shape
    pi = s.get_map(x0.cuda(), x1.cuda())
    m = sqcost(x0, x1)
    assert (m.astype(np.float64) * (pi > 0)).sum() == pytest.approx(scipy_total(m), rel=1e-6)


@pytest.mark.parametrize("hidden, call, install", [
    ("torchcfm", lambda: ours.OTPlanSampler("sinkhorn"), "pip install --no-deps torchcfm"),
    ("ot", lambda: ours.OTPlanSampler("exact").get_map(torch.randn(3, 2), torch.randn(5, 2)),
     "pip install pot"),
])
def test_missing_optional_dependency_is_an_import_error(monkeypatch, hidden, call, install):
    # A module set to None in sys.modules makes its import raise ImportError.
    for name in [m for m in list(sys.modules) if m == hidden or m.startswith(hidden + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, hidden, None)
    with pytest.raises(ImportError, match=install):
        call()
