"""immiscible_ops.linear_sum_assignment against scipy.optimize.linear_sum_assignment itself:
same pairs on fresh random matrices (unique optimum), same totals on ties, same types, same
exceptions, for numpy (every real dtype, C/F order, strided, read-only) and tensors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import immiscible_ops
from immiscible_ops import linear_sum_assignment

scipy_optimize = pytest.importorskip("scipy.optimize")
SHAPES = [(1, 1), (1, 5), (5, 1), (7, 7), (13, 29), (29, 13), (64, 64), (3, 200), (200, 3)]


def scipy_lsa(c, maximize=False):
    return scipy_optimize.linear_sum_assignment(c, maximize=maximize)


def assert_same_as_scipy(cost: np.ndarray, maximize=False, *, same_pairs=True):
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    want_rows, want_cols = scipy_lsa(cost, maximize=maximize)
    assert isinstance(rows, np.ndarray) and isinstance(cols, np.ndarray)
    assert rows.dtype == want_rows.dtype == np.intp and cols.dtype == np.intp
    assert rows.shape == want_rows.shape and cols.shape == want_cols.shape
    assert np.array_equal(rows, np.sort(rows))  # scipy lists pairs by ascending row
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    c64 = np.asarray(cost, dtype=np.float64)
    got, want = c64[rows, cols].sum(), c64[want_rows, want_cols].sum()
    assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    if same_pairs:
        assert np.array_equal(rows, want_rows) and np.array_equal(cols, want_cols)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("maximize", [False, True])
def test_random_float64_same_pairs(np_rng, shape, maximize):
    assert_same_as_scipy(np_rng.standard_normal(shape) * 3 + 1, maximize)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint8,
                                   np.int32, np.int64, np.uint64])
@pytest.mark.parametrize("maximize", [False, True])
def test_every_real_dtype(np_rng, dtype, maximize):
    if np.issubdtype(dtype, np.integer):
        hi = min(np.iinfo(dtype).max, 1000)
        cost = np_rng.integers(0, hi, size=(17, 23)).astype(dtype)
        same_pairs = False  # integer costs tie: any optimum is right
    else:
        cost = np_rng.random((17, 23)).astype(dtype)
        same_pairs = dtype != np.float16  # fp16 rounding makes ties likely
    assert_same_as_scipy(cost, maximize, same_pairs=same_pairs)
    assert_same_as_scipy(cost.T, maximize, same_pairs=same_pairs)


def test_bool(np_rng):
    assert_same_as_scipy(np_rng.random((9, 12)) < 0.3, same_pairs=False)
    assert_same_as_scipy(np_rng.random((9, 12)) < 0.3, maximize=True, same_pairs=False)


def test_layouts(np_rng):
    base = np_rng.random((31, 40))
    for cost in (np.asfortranarray(base), base[::2, ::3], base[::-1, 5:], base.T[::-1],
                 base.astype(">f8"), base.astype(np.float32)[:, ::2]):
        assert_same_as_scipy(cost)
    read_only = base.copy()
    read_only.setflags(write=False)
    assert_same_as_scipy(read_only)
    # a read-only broadcast view (stride 0): ties everywhere, totals only
    assert_same_as_scipy(np.broadcast_to(np_rng.random(40), (31, 40)), same_pairs=False)


def test_nested_lists():
    cost = [[4, 1, 3], [2, 0, 5], [3, 2, 2]]
    rows, cols = linear_sum_assignment(cost)
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [1, 0, 2]


@pytest.mark.parametrize("shape", [(4, 4), (3, 7), (7, 3), (1, 6), (6, 1), (50, 50)])
@pytest.mark.parametrize("maximize", [False, True])
def test_constant_costs_give_scipys_identity(shape, maximize):
    for value in (0.0, 3.25, -7.0):
        cost = np.full(shape, value)
        rows, cols = linear_sum_assignment(cost, maximize=maximize)
        want_rows, want_cols = scipy_lsa(cost, maximize=maximize)
        assert rows.tolist() == want_rows.tolist() and cols.tolist() == want_cols.tolist()
        rows, cols = linear_sum_assignment(torch.from_numpy(cost), maximize=maximize)
        assert rows.tolist() == want_rows.tolist() and cols.tolist() == want_cols.tolist()


@pytest.mark.parametrize("shape", [(12, 12), (9, 31), (31, 9)])
@pytest.mark.parametrize("values", [2, 4, 100])
def test_integer_ties_reach_scipys_optimum(np_rng, shape, values):
    assert_same_as_scipy(np_rng.integers(0, values, size=shape).astype(float), same_pairs=False)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 5), st.booleans(), st.data())
def test_property_optimal_like_scipy(n, m, values, maximize, data):
    flat = data.draw(st.lists(st.integers(-values, values), min_size=n * m, max_size=n * m))
    assert_same_as_scipy(np.array(flat, dtype=np.float64).reshape(n, m), maximize, same_pairs=False)


def test_forbidden_pairs_are_avoided(np_rng):
    cost = np_rng.random((10, 14))
    cost[np_rng.random((10, 14)) < 0.4] = np.inf
    cost[np.arange(10), np.arange(10)] = 0.5  # keeps it feasible
    assert_same_as_scipy(cost)
    maxi = -cost  # -inf forbids when maximizing
    assert_same_as_scipy(maxi, maximize=True)
    tall = cost.T.copy()
    assert_same_as_scipy(tall)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16,
                                   torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("shape", [(8, 8), (5, 11), (11, 5)])
def test_tensors_in_tensors_out(gen, dtype, shape):
    t = (torch.rand(shape, generator=gen) * 50).to(dtype)
    if dtype == torch.bool:
        t = torch.rand(shape, generator=gen) < 0.5
    rows, cols = linear_sum_assignment(t)
    assert rows.dtype == cols.dtype == torch.long and rows.device == t.device
    c = t.double().numpy()
    want_rows, want_cols = scipy_lsa(c)
    # low-precision, integer and bool matrices tie: a tall one may match other rows than scipy's
    assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == min(shape)
    if shape[0] <= shape[1]:
        assert rows.tolist() == want_rows.tolist()
    assert c[rows.numpy(), cols.numpy()].sum() == pytest.approx(c[want_rows, want_cols].sum(), rel=1e-12)
    rows, cols = linear_sum_assignment(t, maximize=True)
    want_rows, want_cols = scipy_lsa(c, maximize=True)
    assert c[rows.numpy(), cols.numpy()].sum() == pytest.approx(c[want_rows, want_cols].sum(), rel=1e-12)


def test_tensor_with_grad_and_strides(gen):
    t = torch.rand(20, 30, generator=gen, dtype=torch.float64, requires_grad=True)
    rows, cols = linear_sum_assignment(t.t()[::2])
    want_rows, want_cols = scipy_lsa(t.detach().t()[::2].numpy())
    assert rows.tolist() == want_rows.tolist() and cols.tolist() == want_cols.tolist()


@pytest.mark.parametrize("shape", [(0, 0), (0, 4), (4, 0)])
def test_empty(shape):
    rows, cols = linear_sum_assignment(np.ones(shape))
    want_rows, want_cols = scipy_lsa(np.ones(shape))
    assert rows.dtype == want_rows.dtype and rows.shape == want_rows.shape == cols.shape
    rows, cols = linear_sum_assignment(torch.ones(shape))
    assert rows.shape == (0,) and rows.dtype == torch.long


BAD = [  # (matrix, maximize): scipy raises on each; so must we, with the same exception type
    (np.float64(1.0), False),
    (np.ones(3), False),
    (np.ones((2, 2, 2)), False),
    (np.array([[np.nan, 1.0], [1.0, 1.0]]), False),
    (np.array([[-np.inf, 1.0], [1.0, 1.0]]), False),
    (np.array([[np.inf, 1.0], [1.0, 1.0]]), True),
    (np.array([[np.inf, np.inf], [1.0, 1.0]]), False),
    (np.array([[np.inf, 2.0, 3.0], [np.inf, 1.0, 1.0], [np.inf, 5.0, 0.0]]).T, False),
    (np.array([[1 + 1j, 2], [3, 4]]), False),
    (np.array([["a", "b"], ["c", "d"]]), False),
    (np.array([[1, None], [2, 3]], dtype=object), False),
]


@pytest.mark.parametrize("cost,maximize", BAD)
def test_errors_match_scipy(cost, maximize):
    with pytest.raises(Exception) as want:
        scipy_lsa(cost, maximize)
    with pytest.raises(want.type) as got:
        linear_sum_assignment(cost, maximize)
    assert str(got.value).startswith("cost_matrix: ")
    if want.type is ValueError:  # scipy's own words follow the argument name
        assert str(want.value).split(",")[0].split(" got")[0] in str(got.value)


def test_tensor_errors():
    with pytest.raises(ValueError, match="^cost_matrix: matrix contains invalid numeric entries"):
        linear_sum_assignment(torch.tensor([[float("nan"), 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="^cost_matrix: cost matrix is infeasible"):
        linear_sum_assignment(torch.tensor([[float("inf")] * 3, [1.0, 2.0, 3.0]]).t())
    with pytest.raises(ValueError, match="^cost_matrix: expected a matrix"):
        linear_sum_assignment(torch.ones(2, 2, 2))
    with pytest.raises(TypeError, match="^cost_matrix:"):
        linear_sum_assignment(torch.ones(2, 2, dtype=torch.complex64))


def test_exported():
    assert "linear_sum_assignment" in immiscible_ops.__all__


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", [(64, 64), (40, 90), (90, 40)])
def test_cuda_tensors_stay_on_the_device(gen, shape):
    t = torch.rand(shape, generator=gen, dtype=torch.float64)
    rows, cols = linear_sum_assignment(t.cuda())
    assert rows.is_cuda and cols.is_cuda and rows.dtype == torch.long
    want_rows, want_cols = scipy_lsa(t.numpy())
    c = t.numpy()
    assert rows.cpu().tolist() == want_rows.tolist()
    # the CUDA solver is the auction: within 1e-6 of the total
    assert c[rows.cpu().numpy(), cols.cpu().numpy()].sum() == pytest.approx(c[want_rows, want_cols].sum(), rel=1e-6)
