// Bertsekas' auction with epsilon-scaling (Gauss-Seidel bidding), in float64.
//
// This is the CPU twin of the CUDA solver in csrc/cuda/: same cost preparation, same bid rule,
// same stopping test, so the two can be tested against each other and against the exact solver.
//
//  * Costs are shifted by their smallest finite value, so prices stay small next to the costs
//    (on the GPU this is what keeps float32 prices from stalling near sqrt(2D)-sized distances).
//  * +inf (forbidden) becomes a finite penalty larger than any difference a feasible assignment
//    can make; a result that uses a penalized pair proves the problem infeasible.
//  * Rectangular problems (n < m) get m - n dummy rows of zero cost, which makes them square
//    without changing the optimum; forward auction needs square problems to be optimal.
//  * A phase ends with every row assigned and eps-complementary slackness, so the duality gap
//    (primal cost minus the dual bound from the prices) is at most m*eps. The solver stops as
//    soon as the measured gap is within tol, else divides eps and runs another phase.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/lap_exact_kernels.h"
#include "cpu/lap_solvers.h"

namespace immiscible::cpu {
namespace {

using kernels::take_two_smallest;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEpsDivisor = 7.0;

struct PreparedCost {
  std::vector<double> cost;  // [m, m], shifted, penalties for +inf, dummy rows of zeros
  double offset = 0.0;       // the shift: smallest finite cost
  double penalty = 0.0;      // cost given to forbidden pairs
  double range = 0.0;        // max - min over finite entries
  bool integral = true;      // every finite entry an integer
};

PreparedCost prepare(const double* cost, int64_t n, int64_t m) {
  PreparedCost p;
  double lo = kInf, hi = -kInf;
  for (int64_t k = 0; k < n * m; ++k) {
    const double c = cost[k];
    if (c == kInf) continue;
    lo = std::min(lo, c);
    hi = std::max(hi, c);
    if (p.integral && c != std::nearbyint(c)) p.integral = false;
  }
  if (lo == kInf) lo = hi = 0.0;  // everything forbidden: any answer is infeasible
  p.offset = lo;
  p.range = hi - lo;
  // Any assignment through a forbidden pair costs more than any assignment avoiding them.
  p.penalty = (p.range + 1.0) * static_cast<double>(m + 1);
  p.cost.assign(m * m, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      const double c = cost[i * m + j];
      p.cost[i * m + j] = c == kInf ? p.penalty : c - lo;
    }
  }
  return p;
}

class Auction {
 public:
  Auction(const std::vector<double>& cost, int64_t m)
      : c_(cost), m_(m), price_(m, 0.0), owner_(m, -1), x_(m, -1) {}

  // One phase at the given eps: all rows bid until each holds a column.
  void run_phase(double eps) {
    std::fill(owner_.begin(), owner_.end(), -1);
    std::fill(x_.begin(), x_.end(), -1);
    std::vector<int64_t> queue(m_);
    for (int64_t i = 0; i < m_; ++i) queue[i] = m_ - 1 - i;
    while (!queue.empty()) {
      const int64_t i = queue.back();
      queue.pop_back();
      const double* ci = &c_[i * m_];
      // Min-cost form: a row wants the column of least cost + price.
      double best = kInf, second = kInf;
      int64_t best_j = 0;
      for (int64_t j = 0; j < m_; ++j) take_two_smallest(ci[j] + price_[j], j, best, second, best_j);
      // With one column the increment is arbitrary; eps keeps it finite.
      const double increment = (second == kInf ? 0.0 : second - best) + eps;
      price_[best_j] += increment;
      const int64_t previous = owner_[best_j];
      owner_[best_j] = i;
      x_[i] = best_j;
      if (previous >= 0) {
        x_[previous] = -1;
        queue.push_back(previous);
      }
    }
  }

  // Primal cost minus the dual bound sum_i min_j (c_ij + p_j) - sum_j p_j (>= 0).
  double duality_gap() const {
    double primal = 0.0, dual = 0.0;
    for (int64_t i = 0; i < m_; ++i) {
      const double* ci = &c_[i * m_];
      double best = kInf;
      for (int64_t j = 0; j < m_; ++j) best = std::min(best, ci[j] + price_[j]);
      dual += best;
      primal += ci[x_[i]];
    }
    for (int64_t j = 0; j < m_; ++j) dual -= price_[j];
    return primal - dual;
  }

  double primal() const {
    double total = 0.0;
    for (int64_t i = 0; i < m_; ++i) total += c_[i * m_ + x_[i]];
    return total;
  }

  const std::vector<int64_t>& assignment() const { return x_; }

 private:
  const std::vector<double>& c_;
  int64_t m_;
  std::vector<double> price_;
  std::vector<int64_t> owner_, x_;
};

}  // namespace

LapStatus solve_lap_auction(const double* cost, int64_t n, int64_t m, double tol,
                            int64_t* row_to_col) {
  if (n == 0) return LapStatus::kOk;
  const PreparedCost prepared = prepare(cost, n, m);
  Auction auction(prepared.cost, m);
  // Start coarse: one eps step above the cost range is the regime where auction is fast.
  double eps = std::max(prepared.range, 1.0) / 4.0;
  const double eps_floor = std::max(prepared.range, 1.0) * 1e-15;
  for (;;) {
    auction.run_phase(eps);
    const double gap = auction.duality_gap();
    const double total = auction.primal() + static_cast<double>(n) * prepared.offset;
    double target = tol > 0.0 ? tol : 1e-6 * std::abs(total);
    if (prepared.integral) target = std::min(target, 0.5);  // integer optimum: gap < 1 is exact
    if (gap <= target || eps <= eps_floor) break;
    eps = std::max(std::min(eps, gap / static_cast<double>(m)) / kEpsDivisor, eps_floor);
  }
  const std::vector<int64_t>& x = auction.assignment();
  for (int64_t i = 0; i < n; ++i) {
    if (prepared.cost[i * m + x[i]] >= prepared.penalty) return LapStatus::kInfeasible;
    row_to_col[i] = x[i];
  }
  return LapStatus::kOk;
}

}  // namespace immiscible::cpu
