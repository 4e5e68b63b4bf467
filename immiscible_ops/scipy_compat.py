"""`linear_sum_assignment` with scipy.optimize's contract, solved by this package's exact solver.

    from immiscible_ops import linear_sum_assignment   # instead of scipy.optimize's
    row_ind, col_ind = linear_sum_assignment(cost)    # cost[row_ind, col_ind].sum() is minimal

What is scipy's and what is ours:
  * inputs: anything np.asarray takes with a real or bool dtype (C or F order, any strides), and
    torch tensors of any real dtype on any device; the matrix may be tall (N > M): like scipy,
    the transpose is solved and the pairs are returned with row_ind ascending;
  * returns: numpy in -> numpy int64 arrays (scipy's np.intp); a tensor in -> LongTensors on the
    tensor's device (scipy would take a CPU tensor and return numpy; here the type follows the
    input so that a CUDA caller never goes through the host);
  * maximize=True maximizes (the negated matrix is solved); +inf forbids a pair when minimizing,
    -inf when maximizing;
  * errors: scipy's exceptions and message text, prefixed with the argument name: ValueError for
    a non-2-D input, NaN or the wrong-signed infinity ("matrix contains invalid numeric
    entries") and for a matrix whose every assignment uses a forbidden pair ("cost matrix is
    infeasible"); TypeError for dtypes numpy cannot cast to float64 safely (complex, str, object);
  * ties: any optimal assignment may come back (scipy's and ours both are optimal; they can differ
    where several are). On the CPU a matrix whose entries are all equal gives scipy's answer, the
    identity (the exact solver keeps each row's lowest column among equals).
CPU tensors and numpy use the exact Jonker-Volgenant solver (float64 inside, scipy's optimum);
CUDA tensors use the CUDA solver under solver="auto" (the auction: within 1e-6 of the total,
exact on integer costs; `immiscible_ops.linear_assignment` documents it).
"""

import warnings
from typing import Tuple, Union

import numpy as np
import torch

from immiscible_ops import ops

Array = Union[np.ndarray, torch.Tensor]

_INVALID = "matrix contains invalid numeric entries"
_INFEASIBLE = "cost matrix is infeasible"


def _as_tensor(cost_matrix) -> Tuple[torch.Tensor, bool]:
    """(2-D floating tensor sharing memory where it can, whether the caller gave a tensor)."""
    if isinstance(cost_matrix, torch.Tensor):
        t = cost_matrix.detach()
        if t.dim() != 2:
            raise ValueError(f"cost_matrix: expected a matrix (2-D array), got a {t.dim()}-D array")
        if t.is_complex():
            raise TypeError(f"cost_matrix: cannot cast {t.dtype} to float64 safely")
        # Integers and bools become float64 as in scipy; floating tensors are solved in their own
        # dtype (the solver works in float64 inside, so their values are used exactly).
        return (t if t.is_floating_point() else t.to(torch.float64)), True
    a = np.asarray(cost_matrix)
    if a.ndim != 2:
        raise ValueError(f"cost_matrix: expected a matrix (2-D array), got a {a.ndim}-D array")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"cost_matrix: cannot cast array data from {a.dtype} to float64 safely")
    if a.dtype.kind != "f" or a.dtype.itemsize > 8:
        a = a.astype(np.float64)
    elif a.dtype.byteorder not in "=|" or any(s < 0 or s % a.itemsize for s in a.strides):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))  # torch.from_numpy's limits
    with warnings.catch_warnings():  # read-only arrays (np.broadcast_to, ...): never written here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a), False


def _raise_rejected(t: torch.Tensor) -> None:
    if bool(torch.isnan(t).any()) or bool(torch.isneginf(t).any()):
        raise ValueError(f"cost_matrix: {_INVALID}")
    raise ValueError(f"cost_matrix: {_INFEASIBLE}")


def linear_sum_assignment(cost_matrix, maximize: bool = False) -> Tuple[Array, Array]:
    """cost_matrix [N, M] -> (row_ind, col_ind), each of length min(N, M): row row_ind[i] takes
    column col_ind[i], rows and columns distinct, cost_matrix[row_ind, col_ind].sum() minimal
    (maximal if maximize), row_ind ascending; scipy.optimize.linear_sum_assignment's contract
    (module docstring: numpy in -> numpy out, tensor in -> tensors out)."""
    cost, is_tensor = _as_tensor(cost_matrix)
    n, m = cost.shape
    device = cost.device

    def out(rows: torch.Tensor, cols: torch.Tensor):
        return (rows, cols) if is_tensor else (rows.cpu().numpy(), cols.cpu().numpy())

    if n == 0 or m == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return out(empty, empty.clone())
    if maximize:
        cost = -cost
    tall = n > m
    problem = cost.t() if tall else cost
    # validate=False: a rejected problem comes back as rows of -1; the cause is looked up only then.
    sol = ops.linear_assignment(problem, validate=False)
    if bool((sol < 0).any()):
        _raise_rejected(problem)
    if not tall:
        return out(torch.arange(n, device=device), sol)
    # sol[j] is the row of column j; scipy lists the pairs by ascending row.
    order = torch.argsort(sol)
    return out(sol[order], order)
