// Bertsekas' auction with epsilon-scaling (Gauss-Seidel bidding), in float64.
//
// This is the CPU twin of the CUDA solver in csrc/cuda/: same cost preparation, same bid rule,
// same stopping test, so the two can be tested against each other and against the exact solver.
//
//  * Costs are shifted by their smallest finite value, so prices stay small next to the costs
//    (on the GPU this is what keeps float32 prices from stalling near sqrt(2D)-sized distances).
//  * +inf (forbidden) becomes a finite penalty larger than any difference a feasible assignment
//    can make; a result that uses a penalized pair proves the problem infeasible.
//  * Rectangular problems (n < m) use the forward/reverse auction for asymmetric assignment
//    (Bertsekas & Castanon), as in the shared asymmetric auction spec: only the n real rows bid forward; then
//    unassigned columns priced above lambda (the lowest assigned price) bid in reverse, lowering
//    their price to take a row, and finally every unassigned column is levelled to lambda. No
//    dummy rows: squaring with zero-cost rows made those rows bid against each other in
//    eps-sized steps, so time exploded with m - n (64x4096 did not finish in 60 s).
//  * A phase ends with every row assigned and eps-complementary slackness, so the duality gap
//    (primal minus the asymmetric dual bound, which has a (m - n) * min_j p_j term) is at most
//    n*eps. The solver stops as soon as the measured gap is within tol, else divides eps.
//  * A new phase keeps every row whose column still meets eps-CS at the new eps and re-queues
//    only the others (the spec's step 1 resets all rows; that reset made tied rows re-fight in
//    eps-sized steps). On integer costs eps stops at 0.5/n: gap <= 0.5 < 1 proves optimality.
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
  std::vector<double> cost;  // [n, m], shifted, penalties for +inf
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
  p.cost.assign(n * m, 0.0);
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
  Auction(const std::vector<double>& cost, int64_t n, int64_t m)
      : c_(cost), n_(n), m_(m), price_(m, 0.0), owner_(m, -1), x_(n, -1), row_best_(n, kInf) {}

  // One phase at eps: forward bids until every row holds a column, then reverse bids from
  // unassigned columns priced above lambda, then those columns are levelled to lambda.
  void run_phase(double eps) {
    // Keep every row that already meets eps-CS at the new eps; a full reset made rows re-fight
    // for tied columns in eps-sized steps (all-equal 1024x1024: 260 ms vs 5 ms exact).
    // row_best_ holds min_j (c_ij + p_j) from the last duality gap (prices have not moved since),
    // so the test costs no pass over the matrix.
    std::vector<int64_t> queue;
    for (int64_t i = n_ - 1; i >= 0; --i) {
      if (x_[i] >= 0) {
        if (c_[i * m_ + x_[i]] + price_[x_[i]] <= row_best_[i] + eps) continue;
        owner_[x_[i]] = -1;
        x_[i] = -1;
      }
      queue.push_back(i);
    }
    forward_stage(eps, queue);
    if (m_ > n_) reverse_stage(eps);
  }

  // Primal minus the asymmetric dual bound
  // sum_i min_j (c_ij + p_j) - sum_j p_j + (m - n) * min_j p_j  (>= 0), then prices shifted
  // so that min_j p_j = 0 (the gap is invariant under that shift).
  double duality_gap_and_shift() {
    double primal = 0.0, dual = 0.0;
    for (int64_t i = 0; i < n_; ++i) {
      const double* ci = &c_[i * m_];
      double best = kInf;
      for (int64_t j = 0; j < m_; ++j) best = std::min(best, ci[j] + price_[j]);
      row_best_[i] = best;
      dual += best;
      primal += ci[x_[i]];
    }
    double lowest = kInf;
    for (int64_t j = 0; j < m_; ++j) {
      dual -= price_[j];
      lowest = std::min(lowest, price_[j]);
    }
    dual += static_cast<double>(m_ - n_) * lowest;
    for (int64_t j = 0; j < m_; ++j) price_[j] -= lowest;
    for (int64_t i = 0; i < n_; ++i) row_best_[i] -= lowest;
    return primal - dual;
  }

  double primal() const {
    double total = 0.0;
    for (int64_t i = 0; i < n_; ++i) total += c_[i * m_ + x_[i]];
    return total;
  }

  const std::vector<int64_t>& assignment() const { return x_; }

 private:
  void forward_stage(double eps, std::vector<int64_t>& queue) {
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

  // Unassigned columns priced above lambda (the lowest assigned price) lower their price to win
  // a row; a row's value u_i = c_ix + p_x only decreases, so eps-CS holds throughout.
  void reverse_stage(double eps) {
    double lambda = kInf;
    for (int64_t j = 0; j < m_; ++j) {
      if (owner_[j] >= 0) lambda = std::min(lambda, price_[j]);
    }
    std::vector<int64_t> bidders;
    for (int64_t j = m_ - 1; j >= 0; --j) {
      if (owner_[j] < 0 && price_[j] > lambda) bidders.push_back(j);
    }
    std::vector<double> value(n_);
    for (int64_t i = 0; i < n_; ++i) value[i] = c_[i * m_ + x_[i]] + price_[x_[i]];
    while (!bidders.empty()) {
      const int64_t j = bidders.back();
      bidders.pop_back();
      double beta1 = -kInf, beta2 = -kInf;
      int64_t best_i = 0;
      for (int64_t i = 0; i < n_; ++i) {
        const double beta = value[i] - c_[i * m_ + j];
        if (beta > beta1) {
          beta2 = beta1;
          beta1 = beta;
          best_i = i;
        } else if (beta > beta2) {
          beta2 = beta;
        }
      }
      if (beta1 - eps <= lambda) {
        price_[j] = lambda;  // retires: no row would take it above lambda
        continue;
      }
      price_[j] = std::max(lambda, beta2 - eps);
      const int64_t k = x_[best_i];
      owner_[k] = -1;
      owner_[j] = best_i;
      x_[best_i] = j;
      value[best_i] = c_[best_i * m_ + j] + price_[j];
      if (price_[k] > lambda) bidders.push_back(k);
    }
    // Level: raising an unassigned column's price never breaks eps-CS.
    for (int64_t j = 0; j < m_; ++j) {
      if (owner_[j] < 0) price_[j] = lambda;
    }
  }

  const std::vector<double>& c_;
  int64_t n_, m_;
  std::vector<double> price_;
  std::vector<int64_t> owner_, x_;
  std::vector<double> row_best_;  // min_j (c_ij + p_j) at the last gap; +inf before the first
};

}  // namespace

LapStatus solve_lap_auction(const double* cost, int64_t n, int64_t m, double tol,
                            int64_t* row_to_col) {
  if (n == 0) return LapStatus::kOk;
  const PreparedCost prepared = prepare(cost, n, m);
  Auction auction(prepared.cost, n, m);
  // Start coarse: one eps step above the cost range is the regime where auction is fast.
  // On integer costs a phase at eps = 0.5/n ends with gap <= 0.5 < 1, which proves the integer
  // optimum: eps never needs to go lower, and the phases between shrink by 7x at most.
  const double eps_floor = prepared.integral ? 0.5 / static_cast<double>(n)
                                             : std::max(prepared.range, 1.0) * 1e-15;
  // With every finite cost equal (range 0) any eps-CS assignment at the floor is optimal: a
  // coarse first phase would only leave a price step that later phases must bid away.
  double eps = prepared.range > 0.0 ? std::max(prepared.range / 4.0, eps_floor) : eps_floor;
  for (;;) {
    auction.run_phase(eps);
    const double gap = auction.duality_gap_and_shift();
    const double total = auction.primal() + static_cast<double>(n) * prepared.offset;
    double target = tol > 0.0 ? tol : 1e-6 * std::abs(total);
    if (prepared.integral) target = std::min(target, 0.5);  // integer optimum: gap < 1 is exact
    if (gap <= target || eps <= eps_floor) break;
    // n, not m: only the n real rows carry eps.
    eps = std::max(std::min(eps, gap / static_cast<double>(n)) / kEpsDivisor, eps_floor);
  }
  const std::vector<int64_t>& x = auction.assignment();
  for (int64_t i = 0; i < n; ++i) {
    if (prepared.cost[i * m + x[i]] >= prepared.penalty) return LapStatus::kInfeasible;
    row_to_col[i] = x[i];
  }
  return LapStatus::kOk;
}

}  // namespace immiscible::cpu
