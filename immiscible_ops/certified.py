"""The "certified" solver: exact assignment for a cost on any device, built from torch's own
operations plus the CPU sparse solver (the same one behind the CPU exact path).

On the cost's device: column potentials (means), each row's k cheapest reduced costs and each
column's k best rows (`torch.topk`), and the certificate, one pass checking
c_ij - u_i - v_j >= -tol on every entry. On the host: Jonker-Volgenant on the candidate lists
(`immiscible::_sparse_assignment`), which returns the assignment and its column duals v. Entries
that fail the certificate join the lists and the sparse problem is solved again from its duals;
after `max_rounds` the dense exact solver answers on the host. Per round, about B*k entries
cross each way and the certificate's count is read back (a host sync): this path is for GPU
users who want the exact optimum without the CUDA auction, not for graph capture.
"""

from typing import Optional, Tuple

import torch

# Rows per slice of the [rows, M] temporaries (reduced costs, certificate): 2^24 entries.
_SLICE_ENTRIES = 1 << 24


def _row_slices(n: int, m: int):
    step = max(1, _SLICE_ENTRIES // max(m, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def list_lengths(n: int, m: int) -> Tuple[int, int]:
    """Candidates per row and per column, as the CPU path chooses them (csrc/cpu/lap_certified.cpp)."""
    return (16 if n >= 8192 else 12), 6


def candidate_edges(cost: torch.Tensor, k_row: int, k_col: int):
    """cost [N, M] -> (rows [E], cols [E]) on cost's device: each row's k_row smallest
    c_ij - v_j (v the column means) and each column's k_col smallest c_ij - v_j - u_i (u_i the
    row's minimum of those)."""
    n, m = cost.shape
    k_row, k_col = min(k_row, m), min(k_col, n)
    v = cost.mean(dim=0, dtype=torch.float64).to(cost.dtype)
    row_cols, col_vals, col_rows = [], None, None
    for a, b in _row_slices(n, m):
        reduced = cost[a:b] - v
        row_cols.append(torch.topk(reduced, k_row, dim=1, largest=False).indices)
        reduced -= reduced.amin(dim=1, keepdim=True)
        vals, idx = torch.topk(reduced, min(k_col, b - a), dim=0, largest=False)
        idx += a
        if col_vals is not None:
            vals, idx = torch.cat([col_vals, vals]), torch.cat([col_rows, idx])
            keep = torch.topk(vals, min(k_col, vals.shape[0]), dim=0, largest=False).indices
            vals, idx = vals.gather(0, keep), idx.gather(0, keep)
        col_vals, col_rows = vals, idx
    device = cost.device
    rows = torch.cat([torch.arange(n, device=device).repeat_interleave(k_row), col_rows.reshape(-1)])
    cols = torch.cat([torch.cat(row_cols).reshape(-1),
                      torch.arange(m, device=device).repeat(col_rows.shape[0])])
    return rows, cols


def certificate(cost: torch.Tensor, x: torch.Tensor, v: torch.Tensor, keep: int,
                cost_scale: float):
    """The dense check of x [N] with column duals v [M] (float64, cost's device): returns
    (rows, cols) of up to `keep` most negative entries of each row with
    c_ij - u_i - v_j < -tol (u_i = c_{i,x_i} - v_{x_i}), and the number of columns breaking
    the rectangular conditions (v <= tol, v = 0 on unassigned columns). tol is 1e-12 times the
    largest of cost_scale (max |c|, read once per solve), |v| and |u|."""
    n, m = cost.shape
    own = cost.gather(1, x[:, None]).squeeze(1).double()
    u = own - v[x]
    scale = max(cost_scale, v.abs().amax().item(), u.abs().amax().item())
    tol = 1e-12 * max(scale, torch.finfo(torch.float64).tiny)
    rows, cols = [], []
    for a, b in _row_slices(n, m):
        reduced = cost[a:b].double() - v - u[a:b, None]
        reduced = reduced.masked_fill_(reduced >= -tol, float("inf"))
        vals, idx = torch.topk(reduced, min(keep, m), dim=1, largest=False)
        hit = torch.isfinite(vals)
        rows.append((torch.arange(a, b, device=cost.device)[:, None].expand_as(idx))[hit])
        cols.append(idx[hit])
    bad_cols = 0
    if n < m:
        used = torch.zeros(m, dtype=torch.bool, device=cost.device)
        used[x] = True
        bad_cols = int(((v > tol) | (~used & (v < -tol))).sum().item())
    return torch.cat(rows), torch.cat(cols), bad_cols


class _SparseProblem:
    """The candidate lists on the host, grown as the certificate hands back entries."""

    def __init__(self, cost: torch.Tensor):
        self.cost, self.n, self.m = cost, cost.shape[0], cost.shape[1]
        self.rows = torch.empty(0, dtype=torch.long)
        self.cols = torch.empty(0, dtype=torch.long)
        self.costs = torch.empty(0, dtype=torch.float64)

    def add(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        costs = self.cost[rows, cols].double()
        self.rows = torch.cat([self.rows, rows.cpu()])
        self.cols = torch.cat([self.cols, cols.cpu()])
        self.costs = torch.cat([self.costs, costs.cpu()])

    def add_full_rows(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.cost.device)
        self.add(rows.repeat_interleave(self.m), torch.arange(self.m, device=self.cost.device)
                 .repeat(rows.numel()))

    def solve(self, x0: Optional[torch.Tensor] = None, v0: Optional[torch.Tensor] = None):
        order = torch.argsort(self.rows, stable=True)
        row_start = torch.zeros(self.n + 1, dtype=torch.long)
        row_start[1:] = torch.cumsum(torch.bincount(self.rows, minlength=self.n), 0)
        return torch.ops.immiscible._sparse_assignment(
            row_start, self.cols[order].contiguous(), self.costs[order].contiguous(), self.m,
            x0, v0)


def solve(cost: torch.Tensor, *, row_candidates: Optional[int] = None,
          col_candidates: Optional[int] = None, max_rounds: int = 4,
          stats: Optional[dict] = None) -> torch.Tensor:
    """cost [N, M] (N <= M, finite, any device) -> LongTensor [N] on cost's device, the exact
    optimum, proven by the certificate or computed by the dense exact solver."""
    n, m = cost.shape
    stats = {} if stats is None else stats
    stats.update(rounds=0, violations=0, dense_rows=0, fell_back=False)
    k_row, k_col = list_lengths(n, m)
    k_row, k_col = row_candidates or k_row, col_candidates or k_col
    cost_scale = cost.abs().amax().item()  # one pass, not one per certificate round
    problem = _SparseProblem(cost)
    problem.add(*candidate_edges(cost, k_row, k_col))
    x, v = problem.solve()
    for round_ in range(max_rounds):
        for _ in range(8):  # rows the lists cannot match get all their columns
            stuck = torch.nonzero(x < 0).flatten()
            if stuck.numel() == 0:
                break
            stats["dense_rows"] += stuck.numel()
            problem.add_full_rows(stuck[:1])
            x, v = problem.solve(x, v)
        if bool((x < 0).any()):
            break
        stats["rounds"] = round_ + 1
        rows, cols, bad_cols = certificate(cost, x.to(cost.device), v.to(cost.device),
                                           keep=max(k_row, 8), cost_scale=cost_scale)
        stats["violations"] += rows.numel() + bad_cols
        if rows.numel() == 0 and bad_cols == 0:
            return x.to(cost.device)
        problem.add(rows, cols)
        if n == m and bad_cols == 0:
            x = x.clone()
            x[rows.unique().cpu()] = -1  # freed: every other row stays tight on its edges
            x, v = problem.solve(x, v)
        else:
            x, v = problem.solve()  # rectangular: a freed column would keep a negative dual
    stats["fell_back"] = True
    return torch.ops.immiscible.linear_assignment(cost.cpu(), "exact", None, True).to(cost.device)


def solve_batched(cost: torch.Tensor, validate: bool = True) -> torch.Tensor:
    """cost [P, N, M] -> LongTensor [P, N]; problems with a non-finite entry go to the dense
    exact solver, which reports NaN, -inf and infeasible ones as linear_assignment does."""
    out = []
    for problem in cost:
        if bool(torch.isfinite(problem).all()):
            out.append(solve(problem))
        else:
            out.append(torch.ops.immiscible.linear_assignment(problem.cpu(), "exact", None,
                                                              validate).to(cost.device))
    return torch.stack(out) if out else torch.empty(cost.shape[:2], dtype=torch.long,
                                                    device=cost.device)
