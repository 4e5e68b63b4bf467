// CPU kernel of immiscible::solve_batched: one solver call per problem, problems spread over
// torch's intra-op threads.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include "cpu/lap_solvers.h"
#include "cpu/lap_sparse.h"
#include "stable_boxing.h"

namespace immiscible::cpu {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

enum class Solver { kExact, kAuction };

Solver parse_solver(const std::string& name) {
  // "auto" is exact on the CPU: JV beats auction on every shape we measured (docs/PERF.md).
  if (name == "auto" || name == "exact") return Solver::kExact;
  if (name == "auction") return Solver::kAuction;
  STD_TORCH_CHECK(false, "solver: unknown solver '", name, "' for CPU");
}

// The CPU auction's work budget, in passes over the cost matrix: IMMISCIBLE_AUCTION_MAX_PASSES,
// else 64. The exact solver typically needs 1-10 passes; an auction that needs many more is in
// a bidding war, and the exact solver finishes the job.
double auction_max_passes() {
  const char* text = std::getenv("IMMISCIBLE_AUCTION_MAX_PASSES");
  if (text == nullptr) return 64.0;
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  STD_TORCH_CHECK(end != text && *end == '\0' && value > 0.0 && std::isfinite(value),
                  "IMMISCIBLE_AUCTION_MAX_PASSES: expected a positive number of passes over the "
                  "cost matrix, got '", text, "'");
  return value;
}

// Problem p of cost as a contiguous float64 [n, m] matrix: a view when cost already is one,
// else a copy into `buffer`. Done here, per problem and inside the worker threads, rather than
// with one torch conversion up front: that extra parallel op cost more than the whole solve on
// small problems (256x256 float32: 8 ms vs 0.5 ms on a loaded 2-core machine).
template <typename T>
const double* problem_as_double(const Tensor& cost, int64_t p, std::vector<double>& buffer) {
  const int64_t n = cost.size(1), m = cost.size(2);
  const int64_t sp = cost.stride(0), sn = cost.stride(1), sm = cost.stride(2);
  const T* src = cost.const_data_ptr<T>() + p * sp;
  if constexpr (std::is_same_v<T, double>) {
    if (sm == 1 && sn == m) return src;
  }
  buffer.resize(n * m);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) buffer[i * m + j] = static_cast<double>(src[i * sn + j * sm]);
  }
  return buffer.data();
}

// Torch's intra-op threads for the dense passes of one large problem.
Workers torch_workers() {
  Workers w;
  w.count = static_cast<int64_t>(torch::stable::get_num_threads());
  w.run = [](int64_t count, const RangeBody& body) {
    torch::stable::parallel_for(0, count, 1, [&](int64_t b, int64_t e) { body(b, e); });
  };
  return w;
}

Workers serial_workers() { return Workers{1, run_serial}; }

// The certified path reads float32/float64 rows in place (contiguous columns); true with
// row_to_col certified optimal, false when the dense solver must answer.
bool try_certified(const Tensor& cost, int64_t p, const CertifiedOptions& options,
                   const Workers& workers, int64_t* row_to_col, CertifiedStats* stats) {
  const int64_t n = cost.size(1), m = cost.size(2);
  if (cost.stride(2) != 1 && m > 1) return false;
  const ScalarType dtype = cost.scalar_type();
  if (dtype == ScalarType::Double) {
    const DenseRows<double> rows{cost.const_data_ptr<double>() + p * cost.stride(0), n, m,
                                 cost.stride(1)};
    return solve_lap_certified(rows, options, workers, row_to_col, stats);
  }
  if (dtype == ScalarType::Float) {
    const DenseRows<float> rows{cost.const_data_ptr<float>() + p * cost.stride(0), n, m,
                                cost.stride(1)};
    return solve_lap_certified(rows, options, workers, row_to_col, stats);
  }
  return false;
}

// Problem p, solved into out [n]: the certified path where it pays (exact solver, large
// problems), else the dense solvers on a float64 view or copy.
LapStatus solve_problem(const Tensor& cost, int64_t p, Solver solver, double tol,
                        double max_passes, const Workers& workers, int64_t* xp) {
  const int64_t n = cost.size(1), m = cost.size(2);
  if (solver == Solver::kExact && certified_pays(n, m) &&
      try_certified(cost, p, CertifiedOptions{}, workers, xp, nullptr)) {
    return LapStatus::kOk;
  }
  std::vector<double> buffer;
  const ScalarType dtype = cost.scalar_type();
  const double* cp = dtype == ScalarType::Double ? problem_as_double<double>(cost, p, buffer)
                     : dtype == ScalarType::Float ? problem_as_double<float>(cost, p, buffer)
                     : dtype == ScalarType::Half  ? problem_as_double<c10::Half>(cost, p, buffer)
                                                  : problem_as_double<c10::BFloat16>(cost, p, buffer);
  LapStatus s = check_values(cp, n * m);
  if (s == LapStatus::kOk) {
    s = solver == Solver::kExact ? solve_lap_exact(cp, n, m, xp)
                                 : solve_lap_auction(cp, n, m, tol, max_passes, xp);
  }
  if (s != LapStatus::kOk) std::fill(xp, xp + n, int64_t{-1});  // never a partial answer
  return s;
}

void check_cost_dtype(const Tensor& cost) {
  const ScalarType dtype = cost.scalar_type();
  STD_TORCH_CHECK(dtype == ScalarType::Double || dtype == ScalarType::Float ||
                      dtype == ScalarType::Half || dtype == ScalarType::BFloat16,
                  "cost must be float64, float32, float16 or bfloat16");
}

// cost [P, N, M] (any floating dtype, any strides) -> (row_to_col [P, N] int64, status [P] int32)
std::tuple<Tensor, Tensor> solve_batched_cpu(Tensor cost, std::string solver_name, double tol) {
  STD_TORCH_CHECK(cost.dim() == 3, "cost must be [P, N, M]");
  const Solver solver = parse_solver(solver_name);
  check_cost_dtype(cost);
  const int64_t problems = cost.size(0), n = cost.size(1), m = cost.size(2);
  STD_TORCH_CHECK(n <= m, "cost must have N <= M");

  Tensor row_to_col = torch::stable::new_empty(cost, {problems, n}, ScalarType::Long);
  Tensor status = torch::stable::new_empty(cost, {problems}, ScalarType::Int);
  // Read on the calling thread, so that a malformed value is an error raised to the caller.
  const double max_passes = solver == Solver::kAuction ? auction_max_passes() : 0.0;
  int64_t* out = row_to_col.mutable_data_ptr<int64_t>();
  int32_t* stat = status.mutable_data_ptr<int32_t>();
  if (problems == 1) {
    // One problem: its dense passes use the threads (a batch spreads problems over them).
    stat[0] = static_cast<int32_t>(solve_problem(cost, 0, solver, tol, max_passes,
                                                 torch_workers(), out));
    return {row_to_col, status};
  }
  torch::stable::parallel_for(0, problems, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      stat[p] = static_cast<int32_t>(
          solve_problem(cost, p, solver, tol, max_passes, serial_workers(), out + p * n));
    }
  });
  return {row_to_col, status};
}

// Test and benchmark hooks of the certified path (immiscible_ops.testing).

// cost [N, M] float32/float64 -> (row_to_col [N], stats [6]: edges, rounds, violations,
// dense rows, fell back, declined). Runs the certified path with the given list lengths (0:
// by size) and round budget, then, if it did not certify, the dense solver, as
// linear_assignment does.
std::tuple<Tensor, Tensor> certified_solve_cpu(Tensor cost, int64_t row_candidates,
                                               int64_t col_candidates, int64_t max_rounds,
                                               bool force) {
  STD_TORCH_CHECK(cost.dim() == 2 && cost.size(0) <= cost.size(1), "cost must be [N, M], N <= M");
  check_cost_dtype(cost);
  Tensor c3 = torch::stable::unsqueeze(cost, 0);
  Tensor row_to_col = torch::stable::new_empty(cost, {cost.size(0)}, ScalarType::Long);
  Tensor stats = torch::stable::new_empty(cost, {6}, ScalarType::Long);
  CertifiedOptions options;
  options.row_candidates = row_candidates;
  options.col_candidates = col_candidates;
  options.max_rounds = max_rounds;
  options.force = force;
  CertifiedStats st;
  int64_t* xp = row_to_col.mutable_data_ptr<int64_t>();
  if (!try_certified(c3, 0, options, torch_workers(), xp, &st)) {
    solve_problem(c3, 0, Solver::kExact, 0.0, 0.0, serial_workers(), xp);
  }
  int64_t* s = stats.mutable_data_ptr<int64_t>();
  s[0] = st.edges;
  s[1] = st.rounds;
  s[2] = st.violations;
  s[3] = st.dense_rows;
  s[4] = st.fell_back;
  s[5] = st.declined;
  return {row_to_col, stats};
}

// The certificate alone: cost [N, M] float32/float64, row_to_col [N] int64, v [M] float64 ->
// (violations [N] int64, bad columns [1] int64). tol < 0: the solver's own tolerance.
std::tuple<Tensor, Tensor> certify_cpu(Tensor cost, Tensor row_to_col, Tensor v, double tol) {
  STD_TORCH_CHECK(cost.dim() == 2, "cost must be [N, M]");
  const int64_t n = cost.size(0), m = cost.size(1);
  STD_TORCH_CHECK(cost.stride(1) == 1, "cost must have contiguous rows");
  STD_TORCH_CHECK(row_to_col.dim() == 1 && row_to_col.size(0) == n &&
                      row_to_col.scalar_type() == ScalarType::Long && row_to_col.is_contiguous(),
                  "row_to_col must be contiguous int64 [N]");
  STD_TORCH_CHECK(v.dim() == 1 && v.size(0) == m && v.scalar_type() == ScalarType::Double &&
                      v.is_contiguous(),
                  "v must be contiguous float64 [M]");
  const int64_t* x = row_to_col.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) STD_TORCH_CHECK(x[i] >= 0 && x[i] < m, "row_to_col out of range");
  Tensor violations = torch::stable::new_empty(cost, {n}, ScalarType::Long);
  Tensor bad = torch::stable::new_empty(cost, {1}, ScalarType::Long);
  int64_t* vp = violations.mutable_data_ptr<int64_t>();
  int64_t* bp = bad.mutable_data_ptr<int64_t>();
  if (cost.scalar_type() == ScalarType::Double) {
    certify(DenseRows<double>{cost.const_data_ptr<double>(), n, m, cost.stride(0)}, x,
            v.const_data_ptr<double>(), tol, torch_workers(), vp, bp);
  } else {
    STD_TORCH_CHECK(cost.scalar_type() == ScalarType::Float, "cost must be float32 or float64");
    certify(DenseRows<float>{cost.const_data_ptr<float>(), n, m, cost.stride(0)}, x,
            v.const_data_ptr<double>(), tol, torch_workers(), vp, bp);
  }
  return {violations, bad};
}

// The sparse solver on caller-made candidate lists (the "certified" solver for tensors on any
// device builds its lists and certificate with torch ops and solves here):
//   row_start [N + 1] int64, cols [E] int64, costs [E] float64, m;
//   x0 [N] int64 (-1: free) and v0 [M] float64 to continue from, or None for a cold start.
// -> (row_to_col [N] int64, -1 for rows the graph could not match; v [M] float64).
std::tuple<Tensor, Tensor> sparse_assignment_cpu(Tensor row_start, Tensor cols, Tensor costs,
                                                 int64_t m, std::optional<Tensor> x0,
                                                 std::optional<Tensor> v0) {
  STD_TORCH_CHECK(row_start.dim() == 1 && row_start.scalar_type() == ScalarType::Long &&
                      row_start.is_contiguous() && row_start.size(0) >= 1,
                  "row_start must be contiguous int64 [N + 1]");
  const int64_t n = row_start.size(0) - 1;
  const int64_t edges = cols.numel();
  STD_TORCH_CHECK(cols.dim() == 1 && cols.scalar_type() == ScalarType::Long && cols.is_contiguous(),
                  "cols must be contiguous int64 [E]");
  STD_TORCH_CHECK(costs.dim() == 1 && costs.size(0) == edges &&
                      costs.scalar_type() == ScalarType::Double && costs.is_contiguous(),
                  "costs must be contiguous float64 [E]");
  STD_TORCH_CHECK(n <= m && m < (int64_t{1} << 31), "need N <= M < 2^31");
  const int64_t* start = row_start.const_data_ptr<int64_t>();
  const int64_t* cp = cols.const_data_ptr<int64_t>();
  const double* wp = costs.const_data_ptr<double>();
  STD_TORCH_CHECK(start[0] == 0 && start[n] == edges, "row_start must run from 0 to E");
  std::vector<int64_t> rows(edges);
  std::vector<int32_t> c32(edges);
  std::vector<double> w(wp, wp + edges);
  for (int64_t i = 0; i < n; ++i) {
    STD_TORCH_CHECK(start[i] <= start[i + 1], "row_start must not decrease");
    for (int64_t e = start[i]; e < start[i + 1]; ++e) {
      STD_TORCH_CHECK(cp[e] >= 0 && cp[e] < m, "cols out of range");
      STD_TORCH_CHECK(std::isfinite(wp[e]), "costs must be finite");
      rows[e] = i;
      c32[e] = static_cast<int32_t>(cp[e]);
    }
  }
  const SparseCost graph = build_sparse_cost(n, m, rows, c32, w);
  SparseJV jv(&graph);
  if (x0.has_value() && v0.has_value()) {
    STD_TORCH_CHECK(x0->numel() == n && x0->scalar_type() == ScalarType::Long && x0->is_contiguous(),
                    "x0 must be contiguous int64 [N]");
    STD_TORCH_CHECK(v0->numel() == m && v0->scalar_type() == ScalarType::Double && v0->is_contiguous(),
                    "v0 must be contiguous float64 [M]");
    jv.set_state(x0->const_data_ptr<int64_t>(), v0->const_data_ptr<double>());
    jv.solve_warm();
  } else {
    jv.solve_cold();
  }
  Tensor x = torch::stable::new_empty(row_start, {n}, ScalarType::Long);
  Tensor v = torch::stable::new_empty(row_start, {m}, ScalarType::Double);
  std::copy(jv.x().begin(), jv.x().end(), x.mutable_data_ptr<int64_t>());
  std::copy(jv.v().begin(), jv.v().end(), v.mutable_data_ptr<double>());
  return {x, v};
}

}  // namespace

LapStatus check_values(const double* cost, int64_t count) {
  // One branch-free pass with a single comparison per entry: !(c > -inf) holds exactly for NaN
  // and -inf. (Two flags per entry took 0.8 ms vs 0.33 ms at 1024x1024, as much as the whole
  // exact solve on tie-heavy costs.) Only a rejected matrix is read twice.
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  int64_t bad = 0;
  for (int64_t k = 0; k < count; ++k) bad |= !(cost[k] > kNegInf);
  if (!bad) return LapStatus::kOk;
  bool nan = false;
  for (int64_t k = 0; k < count; ++k) nan |= cost[k] != cost[k];
  return nan ? LapStatus::kNaN : LapStatus::kNegInf;
}

STABLE_TORCH_LIBRARY_IMPL(immiscible, CPU, m) {
  m.impl("solve_batched", IMMISCIBLE_BOX(&solve_batched_cpu));
  m.impl("_certified_solve", IMMISCIBLE_BOX(&certified_solve_cpu));
  m.impl("_certify", IMMISCIBLE_BOX(&certify_cpu));
  m.impl("_sparse_assignment", IMMISCIBLE_BOX(&sparse_assignment_cpu));
}

}  // namespace immiscible::cpu
