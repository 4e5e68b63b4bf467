// Linear assignment solvers on raw row-major float64 cost matrices, shared by the CPU ops.
//
// Conventions for every solver here:
//   cost        [n, m] row-major, n <= m; +inf marks a forbidden pair; no NaN or -inf
//               (the Python boundary rejects those before any kernel runs).
//   row_to_col  [n] output: the column given to each row, all distinct.
// A solver returns kInfeasible when no assignment avoids every +inf entry.
#pragma once

#include <cstdint>
#include <vector>

namespace immiscible::cpu {

// Status of one problem, as reported by solve_batched on every device.
enum class LapStatus : int32_t { kOk = 0, kInfeasible = 1, kNaN = 2, kNegInf = 3 };

// kNaN or kNegInf if cost [count] holds such a value (which the solvers must not see), else kOk.
LapStatus check_values(const double* cost, int64_t count);

// Exact: shortest augmenting paths (Jonker-Volgenant) with LAPJV's initialization
// (column reduction, reduction transfer, augmenting row reduction) on square problems.
LapStatus solve_lap_exact(const double* cost, int64_t n, int64_t m, int64_t* row_to_col);

// Bertsekas auction with epsilon-scaling. The total cost ends within `tol` of the optimum;
// tol <= 0 selects the default (1e-6 of the total, exact on integer-valued costs). The bids
// get max_passes * n * m of work; an auction that needs more (a bidding war) is finished by
// the exact solver.
LapStatus solve_lap_auction(const double* cost, int64_t n, int64_t m, double tol,
                            double max_passes, int64_t* row_to_col);

// The exact solver's warm start on square problems: eps-scaling auction phases until the duality
// gap is within relative_gap of the total, then the assignment x and the column duals v
// (v_j = -price_j, so c_ij - v_j is the reduced cost). False, leaving x and v alone, on integer,
// constant, +inf-holding or far-offset costs, or when the bids exceed max_passes * n * n reads.
bool auction_duals(const double* cost, int64_t n, double relative_gap, double max_passes,
                   std::vector<int64_t>& x, std::vector<double>& v);

}  // namespace immiscible::cpu
