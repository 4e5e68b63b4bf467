"""integrations.c2ot.OTConditionalPlanSampler against C2OT's algorithm as published (its cost,
its search for w, scipy on the host), written here in numpy: same total cost, same returns."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from immiscible_ops.integrations.c2ot import OTConditionalPlanSampler


def reference_plan(x0, x1, y0, y1, condition_weight, target_r, x_norm="l2_squared",
                   condition_norm="cosine"):
    """C2OT's sample_plan_with_labels in float64: (the data permutation j, w, the cost [prior i,
    data j]). The search runs to convergence (no early exit), so it lands on the jump of r."""
    a = x0.reshape(len(x0), -1).double().numpy()
    b = x1.reshape(len(x1), -1).double().numpy()
    M = ((a[:, None] - b[None]) ** 2).sum(-1)
    if x_norm == "l2":
        M = np.sqrt(M)
    w = 0.0
    cost = M
    if condition_weight or target_r is not None:
        p = y0.reshape(len(y0), -1).double().numpy()
        q = y1.reshape(len(y1), -1).double().numpy()
        if condition_norm == "cosine":
            p = p / np.linalg.norm(p, axis=1, keepdims=True)
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            C = 1 - p @ q.T
        else:
            C = ((p[:, None] - q[None]) ** 2).sum(-1)
        same = (p == q).all(1)
        C[same, same] = 0  # a condition is at distance 0 from itself in exact arithmetic
        w = condition_weight
        if target_r is not None:
            diag = np.diag(M)[None, :]

            def r_fn(v):
                return ((M + v * C) <= diag).mean()

            if r_fn(0) < target_r:
                w = 0.0
            else:
                low, high = 0.0, condition_weight
                while r_fn(high) > target_r and high < 1e8:
                    low, high = high, high * 2
                for _ in range(200):
                    w = (low + high) / 2
                    if r_fn(w) < target_r:
                        high = w
                    else:
                        low = w
        cost = M + w * C
    i, j = linear_sum_assignment(cost)
    assert (i == np.arange(len(i))).all()
    return j, w, cost


def batch(gen, n=48, shape=(3, 4, 4), e=10):
    x0 = torch.randn(n, *shape, generator=gen)
    x1 = torch.randn(n, *shape, generator=gen) * 0.7 + 0.3
    y = torch.randn(n, e, generator=gen)
    return x0, x1, y


def plan_cost(cost: np.ndarray, x1, x1_out) -> float:
    """Total of the pairing (x0_i, x1_out_i) on cost [prior i, data j]."""
    flat = x1.reshape(len(x1), -1)
    j = [int(torch.nonzero((flat == row).all(1))[0]) for row in x1_out.reshape(len(x1_out), -1)]
    return float(cost[np.arange(len(j)), j].sum())


@pytest.mark.parametrize("x_norm,condition_norm", [("l2_squared", "cosine"), ("l2", "l2_squared")])
def test_fixed_weight_same_total_as_c2ot(gen, x_norm, condition_norm):
    x0, x1, y = batch(gen)
    sampler = OTConditionalPlanSampler(condition_weight=25.0, x_norm=x_norm,
                                       condition_norm=condition_norm)
    o0, o1, p0, p1 = sampler.sample_plan_with_labels(x0, x1, y, y)
    j, _, cost = reference_plan(x0, x1, y, y, 25.0, None, x_norm, condition_norm)
    assert plan_cost(cost, x1, o1) == pytest.approx(cost[np.arange(len(j)), j].sum(), rel=1e-6)
    # The prior side keeps its order; the data side and its conditions move together.
    assert torch.equal(o0, x0) and torch.equal(p0, y)
    order = [int(torch.nonzero((x1.flatten(1) == r).all(1))[0]) for r in o1.flatten(1)]
    assert torch.equal(p1, y[order])
    assert sorted(order) == list(range(len(x1)))


@pytest.mark.parametrize("target_r", [0.1, 0.2, 0.3])
def test_target_r_same_weight_and_total_as_c2ot(gen, target_r):
    x0, x1, y = batch(gen, n=64)
    sampler = OTConditionalPlanSampler(condition_weight=100.0, target_r=target_r)
    _, o1, _, _ = sampler.sample_plan_with_labels(x0, x1, y, y)
    j, w_ref, cost = reference_plan(x0, x1, y, y, 100.0, target_r)
    assert sampler.condition_weight == pytest.approx(w_ref, rel=1e-4)
    assert plan_cost(cost, x1, o1) == pytest.approx(cost[np.arange(len(j)), j].sum(), rel=1e-4)


def test_plain_ot_without_weight_or_r(gen):
    x0, x1, _ = batch(gen)
    _, o1, p0, p1 = OTConditionalPlanSampler().sample_plan_with_labels(x0, x1, None, None)
    j, _, cost = reference_plan(x0, x1, None, None, None, None)
    assert plan_cost(cost, x1, o1) == pytest.approx(cost[np.arange(len(j)), j].sum(), rel=1e-6)
    assert p0 is None and p1 is None


def test_inputs_are_not_modified(gen):
    x0, x1, y = batch(gen)
    copies = [t.clone() for t in (x0, x1, y)]
    sampler = OTConditionalPlanSampler(condition_weight=1.0, target_r=0.2)
    sampler.sample_plan_with_labels(x0, x1, y, y)
    for t, before in zip((x0, x1, y), copies, strict=True):
        assert torch.equal(t, before)


def test_condition_cost_pulls_pairs_to_equal_conditions(gen):
    # Discrete conditions as one-hot vectors: a large weight pairs within a condition only.
    x0, x1, _ = batch(gen, n=40)
    labels = torch.randint(0, 4, (40,), generator=gen)
    y = torch.nn.functional.one_hot(labels, 4).float()
    sampler = OTConditionalPlanSampler(condition_weight=1e4)
    _, _, p0, p1 = sampler.sample_plan_with_labels(x0, x1, y, y)
    assert torch.equal(p0, p1)
    _, _, p0, p1 = OTConditionalPlanSampler().sample_plan_with_labels(x0, x1, y, y)
    assert not torch.equal(p0, p1)  # plain OT crosses conditions


@pytest.mark.parametrize("kwargs,args,message", [
    (dict(x_norm="l1"), None, "x_norm: unknown"),
    (dict(condition_norm="dot"), None, "condition_norm: unknown"),
    (dict(target_r=0.0), None, "target_r: expected a fraction"),
    (dict(condition_weight=-2.0), None, "condition_weight: expected a number >= 0"),
    (dict(max_num_iter=0), None, "max_num_iter"),
    (dict(condition_weight=1.0), "no_y", "y0, y1: the condition-aware plan needs both"),
    (dict(condition_weight=1.0), "short_y", r"y1: expected \[12, ...\]"),
    (dict(condition_weight=1.0), "nan_y", "y0: contains NaN"),
    (dict(), "uneven", "x1: shape"),
])
def test_bad_input(gen, kwargs, args, message):
    x0, x1, y = batch(gen, n=12)
    with pytest.raises(ValueError, match=message):
        sampler = OTConditionalPlanSampler(**kwargs)
        y0, y1 = y, y
        if args == "no_y":
            y0 = y1 = None
        elif args == "short_y":
            y1 = y[:-1]
        elif args == "nan_y":
            y0 = y.clone()
            y0[2, 1] = float("nan")
        elif args == "uneven":
            x1 = x1[:-1]
        sampler.sample_plan_with_labels(x0, x1, y0, y1)
