// CPU kernel of immiscible::solve_batched: one solver call per problem, problems spread over
// torch's intra-op threads.
#include <algorithm>
#include <limits>
#include <string>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include "cpu/lap_solvers.h"

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

// cost [P, N, M] (any floating dtype, any strides) -> (row_to_col [P, N] int64, status [P] int32)
std::tuple<Tensor, Tensor> solve_batched_cpu(Tensor cost, std::string solver_name, double tol) {
  STD_TORCH_CHECK(cost.dim() == 3, "cost must be [P, N, M]");
  const Solver solver = parse_solver(solver_name);
  // The solvers work in float64 whatever the input dtype.
  Tensor cost64 = torch::stable::contiguous(torch::stable::to(cost, ScalarType::Double));
  const int64_t problems = cost64.size(0), n = cost64.size(1), m = cost64.size(2);
  STD_TORCH_CHECK(n <= m, "cost must have N <= M");

  Tensor row_to_col = torch::stable::new_empty(cost64, {problems, n}, ScalarType::Long);
  Tensor status = torch::stable::new_empty(cost64, {problems}, ScalarType::Int);
  const double* c = cost64.const_data_ptr<double>();
  int64_t* out = row_to_col.mutable_data_ptr<int64_t>();
  int32_t* stat = status.mutable_data_ptr<int32_t>();

  torch::stable::parallel_for(0, problems, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const double* cp = c + p * n * m;
      int64_t* xp = out + p * n;
      LapStatus s = check_values(cp, n * m);
      if (s == LapStatus::kOk) {
        s = solver == Solver::kExact ? solve_lap_exact(cp, n, m, xp)
                                     : solve_lap_auction(cp, n, m, tol, xp);
      }
      if (s != LapStatus::kOk) std::fill(xp, xp + n, int64_t{-1});  // never a partial answer
      stat[p] = static_cast<int32_t>(s);
    }
  });
  return {row_to_col, status};
}

}  // namespace

LapStatus check_values(const double* cost, int64_t count) {
  // One branch-free pass; the value checks cost about 1% of a solve, so they always run.
  bool nan = false, neg_inf = false;
  for (int64_t k = 0; k < count; ++k) {
    nan |= cost[k] != cost[k];
    neg_inf |= cost[k] == -std::numeric_limits<double>::infinity();
  }
  return nan ? LapStatus::kNaN : neg_inf ? LapStatus::kNegInf : LapStatus::kOk;
}

STABLE_TORCH_LIBRARY_IMPL(immiscible, CPU, m) {
  m.impl("solve_batched", TORCH_BOX(&solve_batched_cpu));
}

}  // namespace immiscible::cpu
