"""assign with C2OT's condition cost: optimality on the combined cost against scipy, the weight
that condition_target_r picks against C2OT's own search (doubling and bisection, written here
from the paper's code), the slots of a pool, groups together with conditions, and bad input."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import immiscible_ops as io
from immiscible_ops.ops import condition_weight_for_r


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - a @ b.T


def c2ot_search_for_w(M, C, r, initial_w=1.0, max_iter=200, abs_tol=0.0, max_w=1e8):
    """C2OT's search_for_w, in numpy float64: M, C indexed [prior i, data j], r counts entries
    with M + w C <= M[j, j] (the diagonal broadcast along rows, as torch broadcasts it there)."""
    diag = np.diag(M)[None, :]

    def r_fn(w):
        return ((M + w * C) <= diag).mean()

    if r_fn(0) < r:
        return 0.0
    low, high = 0.0, initial_w
    for _ in range(max_iter):
        if r_fn(high) > r:
            low, high = high, high * 2
        else:
            break
        if high > max_w:
            return max_w
    mid = high
    for _ in range(max_iter):
        mid = (low + high) / 2
        cur = r_fn(mid)
        if cur < r:
            high = mid
        else:
            low = mid
        if abs(cur - r) < abs_tol:
            return mid
    return mid


def problem(gen, b=40, k=None, d=12, e=6):
    k = k or b
    x = torch.randn(b, d, generator=gen)
    noise = torch.randn(k, d, generator=gen)
    c = torch.randn(b, e, generator=gen)
    return x, noise, c


def total(cost: np.ndarray, index) -> float:
    return float(cost[np.arange(cost.shape[0]), np.asarray(index)].sum())


@pytest.mark.parametrize("metric,condition_metric",
                         [("l2", "cosine"), ("sqeuclidean", "sqeuclidean")])
def test_fixed_weight_is_optimal_on_the_combined_cost(gen, metric, condition_metric):
    x, noise, c = problem(gen)
    w = 3.7
    idx = io.assign(x, noise, metric=metric, precision="fp32", conditions=c, condition_weight=w,
                    condition_metric=condition_metric)
    xd, nd, cd = x.double().numpy(), noise.double().numpy(), c.double().numpy()
    dist = np.sqrt(((xd[:, None] - nd[None]) ** 2).sum(-1))
    if metric == "sqeuclidean":
        dist = dist ** 2
    if condition_metric == "cosine":
        cond = cosine_distance(cd, cd)
    else:
        cond = ((cd[:, None] - cd[None]) ** 2).sum(-1)
    cost = dist + w * cond
    rows, cols = linear_sum_assignment(cost)
    assert total(cost, idx) == pytest.approx(cost[rows, cols].sum(), rel=1e-6)
    # The condition cost changes the answer: the plain assignment is not optimal here.
    plain = io.assign(x, noise, metric=metric, precision="fp32")
    assert total(cost, plain) > cost[rows, cols].sum() + 1e-6


@pytest.mark.parametrize("target_r", [0.05, 0.2, 0.35])
def test_target_r_weight_matches_c2ot_search(gen, target_r):
    x, noise, c = problem(gen, b=48)
    dist = io.pairwise_distance(x, noise, metric="sqeuclidean")
    cond = io.ops.condition_distance(c, c, "cosine").fill_diagonal_(0)
    w = float(condition_weight_for_r(dist, cond, target_r))
    # C2OT's orientation: rows are the prior (noise), columns the data; a condition is at
    # distance 0 from itself, as in exact arithmetic.
    C = cosine_distance(c.double().numpy(), c.double().numpy()).T
    np.fill_diagonal(C, 0)
    M = dist.double().numpy().T
    w_ref = c2ot_search_for_w(M, C, target_r)
    assert w == pytest.approx(w_ref, rel=1e-4)
    diag = np.diag(M)[None, :]
    # w is a float32 t value: judged a hair either side of it.
    r_at = ((M + w * (1 - 1e-4) * C) <= diag).mean()
    r_past = ((M + w * (1 + 1e-3) * C) <= diag).mean()
    assert r_at >= target_r - 1e-9 and r_past < target_r


def test_target_r_solves_the_combined_cost(gen):
    x, noise, c = problem(gen, b=56)
    idx = io.assign(x, noise, metric="sqeuclidean", precision="fp32", conditions=c,
                    condition_target_r=0.2)
    dist = io.pairwise_distance(x, noise, metric="sqeuclidean")
    cond = io.ops.condition_distance(c, c, "cosine").fill_diagonal_(0)
    w = float(condition_weight_for_r(dist, cond, 0.2))
    assert w > 0
    cost = (dist.double() + w * cond.double()).numpy()
    rows, cols = linear_sum_assignment(cost)
    assert total(cost, idx) == pytest.approx(cost[rows, cols].sum(), rel=1e-5)


def test_unreachable_r_gives_weight_zero_and_the_plain_assignment(gen):
    x, noise, c = problem(gen)
    dist = io.pairwise_distance(x, noise, metric="l2")
    cond = io.ops.condition_distance(c, c, "cosine")
    r0 = float((dist <= dist.diagonal()[:, None]).float().mean())
    target = min(1.0, r0 + 0.05)
    assert float(condition_weight_for_r(dist, cond, target)) == 0.0
    got = io.assign(x, noise, precision="fp32", conditions=c, condition_target_r=target)
    assert torch.equal(got, io.assign(x, noise, precision="fp32"))


def test_large_weight_keeps_discrete_conditions_like_groups(gen):
    b = 36
    x, noise, _ = problem(gen, b=b)
    labels = torch.randint(0, 4, (b,), generator=gen)
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    idx = io.assign(x, noise, precision="fp32", conditions=onehot, condition_weight=1e4)
    # Slot j carries image j's condition, so image i's noise was drawn for an image of its class.
    assert torch.equal(labels[idx], labels)
    # Within the classes it is the optimum: the in-class cost is what groups would solve... on
    # slots owned by the class itself (groups hands out shares in sorted order instead).
    dist = io.pairwise_distance(x, noise).double()
    allowed = labels[:, None] == labels[None, :]
    cost = dist.masked_fill(~allowed, float("inf")).numpy()
    rows, cols = linear_sum_assignment(cost)
    assert total(cost, idx) == pytest.approx(cost[rows, cols].sum(), rel=1e-6)


def test_pool_slots_carry_the_condition_of_image_floor_j_b_over_k(gen):
    b, k = 10, 25
    x, noise, _ = problem(gen, b=b, k=k)
    labels = torch.arange(b) % 3
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    idx = io.assign(x, noise, precision="fp32", conditions=onehot, condition_weight=1e4)
    owner = torch.arange(k) * b // k
    assert torch.equal(labels[owner[idx]], labels)
    assert idx.unique().numel() == b


def test_groups_and_conditions_combine(gen):
    b = 30
    x, noise, c = problem(gen, b=b)
    groups = torch.randint(0, 3, (b,), generator=gen)
    idx = io.assign(x, noise, precision="fp32", groups=groups, conditions=c, condition_weight=2.0)
    mask = io.ops.group_mask(groups, b)
    assert bool(mask[torch.arange(b), idx].all())
    dist = io.pairwise_distance(x, noise).double()
    cost = (dist + 2.0 * io.ops.condition_distance(c, c).double()).masked_fill(~mask, float("inf"))
    rows, cols = linear_sum_assignment(cost.numpy())
    assert total(cost.numpy(), idx) == pytest.approx(float(cost[rows, cols].sum()), rel=1e-6)


def test_inputs_are_not_modified(gen):
    x, noise, c = problem(gen)
    copies = [t.clone() for t in (x, noise, c)]
    io.assign(x, noise, conditions=c, condition_target_r=0.3)
    io.immiscible_noise(x, conditions=c, condition_weight=1.0, generator=gen)
    for t, before in zip((x, noise, c), copies, strict=True):
        assert torch.equal(t, before)


def test_immiscible_noise_with_conditions_is_the_assigned_draw(gen):
    x, _, c = problem(gen, b=24)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    got = io.immiscible_noise(x, conditions=c, condition_target_r=0.2,
                              generator=torch.Generator().manual_seed(seed))
    draws = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    want = draws[io.assign(x, draws, conditions=c, condition_target_r=0.2)]
    assert torch.equal(got, want)


def test_condition_distance_never_negative(gen):
    c = torch.randn(16, 5, generator=gen)
    assert float(io.ops.condition_distance(c, c).min()) >= 0
    assert float(io.ops.condition_distance(c, c, "sqeuclidean").min()) >= 0


def test_opcheck_with_conditions(gen):
    x, noise, c = problem(gen, b=8)
    torch.library.opcheck(torch.ops.immiscible.assign.default,
                          (x, noise, "l2", "fp32", "exact", None, None, True, c, None, 0.25,
                           "cosine"))


def _bad_cases(x, c):
    return [
        (dict(conditions=c[:-1], condition_weight=1.0), "conditions: expected shape"),
        (dict(conditions=c.long(), condition_weight=1.0), "conditions: expected a floating"),
        (dict(conditions=c.tolist(), condition_weight=1.0), "conditions: expected a tensor"),
        (dict(conditions=c.clone().index_fill_(0, torch.tensor([3]), float("nan")),
              condition_weight=1.0), "conditions: contains NaN"),
        (dict(conditions=c, condition_weight=-1.0), "condition_weight: expected a finite number"),
        (dict(conditions=c, condition_weight=float("inf")), "condition_weight: expected a finite"),
        (dict(conditions=c, condition_target_r=0.0), "condition_target_r: expected a fraction"),
        (dict(conditions=c, condition_target_r=1.5), "condition_target_r: expected a fraction"),
        (dict(conditions=c, condition_weight=1.0, condition_target_r=0.2), "give exactly one"),
        (dict(conditions=c), "give exactly one"),
        (dict(condition_weight=1.0), "condition_weight: given without conditions"),
        (dict(condition_target_r=0.2), "condition_target_r: given without conditions"),
        (dict(conditions=c, condition_weight=1.0, condition_metric="l1"),
         "condition_metric: unknown"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_conditions_raise_value_error_naming_them(gen, case):
    x, noise, c = problem(gen, b=12)
    kwargs, message = _bad_cases(x, c)[case]
    with pytest.raises(ValueError, match=message):
        io.assign(x, noise, **kwargs)
    if "conditions" in kwargs or "given without" in message:
        with pytest.raises(ValueError, match=message):
            io.immiscible_noise(x, **kwargs)
