// CPU kernel of immiscible::solve_batched: one solver call per problem, problems spread over
// torch's intra-op threads.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
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

// cost [P, N, M] (any floating dtype, any strides) -> (row_to_col [P, N] int64, status [P] int32)
std::tuple<Tensor, Tensor> solve_batched_cpu(Tensor cost, std::string solver_name, double tol) {
  STD_TORCH_CHECK(cost.dim() == 3, "cost must be [P, N, M]");
  const Solver solver = parse_solver(solver_name);
  const ScalarType dtype = cost.scalar_type();
  STD_TORCH_CHECK(dtype == ScalarType::Double || dtype == ScalarType::Float ||
                      dtype == ScalarType::Half || dtype == ScalarType::BFloat16,
                  "cost must be float64, float32, float16 or bfloat16");
  const int64_t problems = cost.size(0), n = cost.size(1), m = cost.size(2);
  STD_TORCH_CHECK(n <= m, "cost must have N <= M");

  Tensor row_to_col = torch::stable::new_empty(cost, {problems, n}, ScalarType::Long);
  Tensor status = torch::stable::new_empty(cost, {problems}, ScalarType::Int);
  // Read on the calling thread, so that a malformed value is an error raised to the caller.
  const double max_passes = solver == Solver::kAuction ? auction_max_passes() : 0.0;
  int64_t* out = row_to_col.mutable_data_ptr<int64_t>();
  int32_t* stat = status.mutable_data_ptr<int32_t>();

  torch::stable::parallel_for(0, problems, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> buffer;
    for (int64_t p = begin; p < end; ++p) {
      const double* cp = dtype == ScalarType::Double ? problem_as_double<double>(cost, p, buffer)
                          : dtype == ScalarType::Float ? problem_as_double<float>(cost, p, buffer)
                          : dtype == ScalarType::Half  ? problem_as_double<c10::Half>(cost, p, buffer)
                                                       : problem_as_double<c10::BFloat16>(cost, p, buffer);
      int64_t* xp = out + p * n;
      LapStatus s = check_values(cp, n * m);
      if (s == LapStatus::kOk) {
        s = solver == Solver::kExact ? solve_lap_exact(cp, n, m, xp)
                                     : solve_lap_auction(cp, n, m, tol, max_passes, xp);
      }
      if (s != LapStatus::kOk) std::fill(xp, xp + n, int64_t{-1});  // never a partial answer
      stat[p] = static_cast<int32_t>(s);
    }
  });
  return {row_to_col, status};
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
}

}  // namespace immiscible::cpu
