// Bertsekas' auction with epsilon-scaling (Gauss-Seidel bidding), in float64.
//
// This is the CPU twin of the CUDA solver in csrc/cuda/: same cost preparation, same bid rule,
// same stopping test, so the two can be tested against each other and against the exact solver.
//
//  * Costs far from zero next to their range are shifted by their smallest finite value, so
//    prices stay small next to the costs (on the GPU, where every cost is shifted, this is what
//    keeps float32 prices from stalling near sqrt(2D)-sized distances); other costs are bid on in
//    place, without a copy.
//  * +inf (forbidden) becomes a finite penalty larger than any difference a feasible assignment
//    can make; a result that uses a penalized pair proves the problem infeasible.
//  * Rectangular problems (n < m) use the forward/reverse auction for asymmetric assignment
//    (Bertsekas & Castanon, Comput. Optim. Appl. 1, 1992): only the n real rows bid forward; then
//    unassigned columns priced above lambda (the lowest assigned price) bid in reverse, lowering
//    their price to take a row, and finally every unassigned column is levelled to lambda. No
//    dummy rows: squaring with zero-cost rows made those rows bid against each other in
//    eps-sized steps, so time exploded with m - n (64x4096 did not finish in 60 s).
//  * A phase ends with every row assigned and eps-complementary slackness, so the duality gap
//    (primal minus the asymmetric dual bound, which has a (m - n) * min_j p_j term) is at most
//    n*eps. The solver stops as soon as the measured gap is within tol, else lowers eps
//    (next_eps: by 7, or straight to gap/n/7, gap/n/49 with m >= 2n, when the last phase shows
//    no sign of a bidding war).
//  * Bids have a work budget (64 passes over the matrix by default); an auction that runs out,
//    a bidding war on some tie-heavy cost, hands the problem to the exact solver.
//  * A new phase keeps every row whose column still meets eps-CS at the new eps and re-queues
//    only the others (the published algorithm resets all rows at each phase; on ties that reset
//    makes tied rows re-fight in eps-sized steps). On integer costs eps stops at 0.5/n: gap <= 0.5 < 1 proves optimality.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

#include "cpu/lap_exact_kernels.h"
#include "cpu/lap_solvers.h"

namespace immiscible::cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEpsDivisor = 7.0;
constexpr int64_t kFewValuesMultiplicity = 8;

// Entries farther than this many cost ranges from zero are shifted (in a copy) before bidding,
// so that prices and eps stay resolvable next to them in float64.
constexpr double kMaxOffsetInRanges = 1e3;

struct PreparedCost {
  const double* cost = nullptr;    // [n, m]: the caller's matrix, or `owned`
  std::unique_ptr<double[]> owned;  // the shifted copy with penalties for +inf, when needed
  double offset = 0.0;              // subtracted from every entry of `cost`
  double penalty = kInf;            // cost given to forbidden pairs (+inf: none)
  double range = 0.0;               // max - min over finite entries
  bool integral = true;             // every finite entry an integer
  int64_t at_row_minima = 0;        // integer costs: entries equal to their row's minimum
};

PreparedCost prepare(const double* cost, int64_t n, int64_t m) {
  PreparedCost p;
  const kernels::CostStats stats = kernels::has_avx2() ? kernels::cost_stats_avx2(cost, n * m)
                                                       : kernels::cost_stats_scalar(cost, n * m);
  double lo = stats.lo, hi = stats.hi;
  const bool forbidden = stats.any_inf;
  p.integral = stats.integral;
  for (int64_t i = 0; p.integral && i < n; ++i) {  // only integer costs start by this count
    const double* row = cost + i * m;
    const double row_min = *std::min_element(row, row + m);
    p.at_row_minima += std::count(row, row + m, row_min);
  }
  if (lo == kInf) lo = hi = 0.0;  // everything forbidden: any answer is infeasible
  p.range = hi - lo;
  if (!forbidden && std::abs(lo) <= kMaxOffsetInRanges * std::max(p.range, 1.0)) {
    // Bid on the caller's matrix: a copy costs a pass plus page faults on a fresh buffer
    // (20 ms of a 60 ms solve at 1024 x 4096).
    p.cost = cost;
    return p;
  }
  p.offset = lo;
  // Any assignment through a forbidden pair costs more than any assignment avoiding them.
  if (forbidden) p.penalty = (p.range + 1.0) * static_cast<double>(m + 1);
  p.owned.reset(new double[n * m]);  // every entry written below: no zero fill
  for (int64_t k = 0; k < n * m; ++k) {
    const double c = cost[k];
    p.owned[k] = c == kInf ? p.penalty : c - lo;
  }
  p.cost = p.owned.get();
  return p;
}

class Auction {
 public:
  // work_budget: cost entries the bids may read in all (a forward bid reads a row of m, a
  // reverse bid a column of n); a phase that would exceed it stops and reports false.
  Auction(const double* cost, int64_t n, int64_t m, double work_budget)
      : c_(cost), n_(n), m_(m), v_(m, 0.0), owner_(m, -1), x_(n, -1), row_best_(n, kInf),
        work_left_(work_budget) {}

  // One phase at eps: forward bids until every row holds a column, then reverse bids from
  // unassigned columns priced above lambda, then those columns are levelled to lambda.
  // False when the work budget ran out (the assignment is then incomplete).
  bool run_phase(double eps) {
    bids_ = tied_bids_ = 0;
    // Keep every row that already meets eps-CS at the new eps; a full reset made rows re-fight
    // for tied columns in eps-sized steps (all-equal 1024x1024: 260 ms vs 5 ms exact).
    // row_best_ holds min_j (c_ij + p_j) from the last duality gap (prices have not moved since),
    // so the test costs no pass over the matrix.
    std::vector<int64_t> queue;
    for (int64_t i = n_ - 1; i >= 0; --i) {
      if (x_[i] >= 0) {
        if (c_[i * m_ + x_[i]] + price(x_[i]) <= row_best_[i] + eps) continue;
        owner_[x_[i]] = -1;
        x_[i] = -1;
      }
      queue.push_back(i);
    }
    if (!forward_stage(eps, queue)) return false;
    return m_ == n_ || reverse_stage(eps);
  }

  // Forward bids of the last phase, and those whose best and second-best columns tied (the bid
  // then raises the price by eps alone).
  int64_t bids() const { return bids_; }
  int64_t tied_bids() const { return tied_bids_; }

  // Primal minus the asymmetric dual bound
  // sum_i min_j (c_ij + p_j) - sum_j p_j + (m - n) * min_j p_j  (>= 0), then prices shifted
  // so that min_j p_j = 0 (the gap is invariant under that shift).
  double duality_gap_and_shift() {
    double primal = 0.0, dual = 0.0;
    for (int64_t i = 0; i < n_; ++i) {
      const double* ci = &c_[i * m_];
      double best, second;
      int64_t best_j;
      two_smallest(ci, best, second, best_j);
      row_best_[i] = best;
      dual += best;
      primal += ci[x_[i]];
    }
    double lowest = kInf;
    for (int64_t j = 0; j < m_; ++j) {
      dual -= price(j);
      lowest = std::min(lowest, price(j));
    }
    dual += static_cast<double>(m_ - n_) * lowest;
    for (int64_t j = 0; j < m_; ++j) v_[j] += lowest;
    for (int64_t i = 0; i < n_; ++i) row_best_[i] -= lowest;
    return primal - dual;
  }

  double primal() const {
    double total = 0.0;
    for (int64_t i = 0; i < n_; ++i) total += c_[i * m_ + x_[i]];
    return total;
  }

  const std::vector<int64_t>& assignment() const { return x_; }
  // Column duals in the exact solver's convention (v_j = -p_j: reduced cost c_ij - v_j).
  const std::vector<double>& duals() const { return v_; }

 private:
  double price(int64_t j) const { return -v_[j]; }

  // Smallest and second-smallest c_ij + p_j over j (second == best on a tie), best at its first
  // column: the AVX2 loop where the CPU has it.
  void two_smallest(const double* ci, double& best, double& second, int64_t& best_j) const {
    if (kernels::has_avx2()) {
      kernels::two_smallest_avx2(ci, v_.data(), m_, best, second, best_j);
    } else {
      kernels::two_smallest_scalar(ci, v_.data(), m_, best, second, best_j);
    }
  }

  bool forward_stage(double eps, std::vector<int64_t>& queue) {
    while (!queue.empty()) {
      if ((work_left_ -= static_cast<double>(m_)) < 0.0) return false;
      const int64_t i = queue.back();
      queue.pop_back();
      ++bids_;
      const double* ci = &c_[i * m_];
      // Min-cost form: a row wants the column of least cost + price.
      double best, second;
      int64_t best_j;
      two_smallest(ci, best, second, best_j);
      if (second == best) ++tied_bids_;
      // With one column the increment is arbitrary; eps keeps it finite.
      const double increment = (second == kInf ? 0.0 : second - best) + eps;
      v_[best_j] -= increment;
      const int64_t previous = owner_[best_j];
      owner_[best_j] = i;
      x_[i] = best_j;
      if (previous >= 0) {
        x_[previous] = -1;
        queue.push_back(previous);
      }
    }
    return true;
  }

  // Unassigned columns priced above lambda (the lowest assigned price) lower their price to win
  // a row; a row's value u_i = c_ix + p_x only decreases, so eps-CS holds throughout.
  bool reverse_stage(double eps) {
    double lambda = kInf;
    for (int64_t j = 0; j < m_; ++j) {
      if (owner_[j] >= 0) lambda = std::min(lambda, price(j));
    }
    std::vector<int64_t> bidders;
    for (int64_t j = m_ - 1; j >= 0; --j) {
      if (owner_[j] < 0 && price(j) > lambda) bidders.push_back(j);
    }
    std::vector<double> value(n_);
    for (int64_t i = 0; i < n_; ++i) value[i] = c_[i * m_ + x_[i]] + price(x_[i]);
    while (!bidders.empty()) {
      if ((work_left_ -= static_cast<double>(n_)) < 0.0) return false;
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
        v_[j] = -lambda;  // retires: no row would take it above lambda
        continue;
      }
      v_[j] = -std::max(lambda, beta2 - eps);
      const int64_t k = x_[best_i];
      owner_[k] = -1;
      owner_[j] = best_i;
      x_[best_i] = j;
      value[best_i] = c_[best_i * m_ + j] + price(j);
      if (price(k) > lambda) bidders.push_back(k);
    }
    // Level: raising an unassigned column's price never breaks eps-CS.
    for (int64_t j = 0; j < m_; ++j) {
      if (owner_[j] < 0) v_[j] = -lambda;
    }
    return true;
  }

  const double* c_;
  int64_t n_, m_;
  // Prices, negated: v_j = -p_j, so that c_ij + p_j = c_ij - v_j is what the exact solver's
  // vector kernels scan (negation is exact: the same values as c + p).
  std::vector<double> v_;
  std::vector<int64_t> owner_, x_;
  std::vector<double> row_best_;  // min_j (c_ij + p_j) at the last gap; +inf before the first
  double work_left_;
  int64_t bids_ = 0, tied_bids_ = 0;
};

// eps for the next phase. Dividing by kEpsDivisor is the safe step. Jumping to the measured
// gap / n / kEpsDivisor (/ kEpsDivisor^2 where m >= 2n) skips phases, each a pass over the
// matrix for the gap, and pays off when a row that loses a bid has free columns to go to
// (m >= 2n), or when the assignment is already far better than eps guarantees
// (gap <= n eps / kEpsDivisor^2). When most bids tied (the costs have
// few distinct values), or on a square problem whose gap is near its n eps bound, a big jump
// starts a bidding war in eps-sized steps (integer costs 0..3 at 1024 x 1024: 1e6 bids, 190 ms
// vs 9 ms in steps of 7; uniform square: 86k bids vs 7k).
double next_eps(double eps, double gap, int64_t n, int64_t m, int64_t bids, int64_t tied_bids,
                double eps_floor) {
  const double nd = static_cast<double>(n);
  const bool free_columns = m >= 2 * n;
  const bool calm = 4 * tied_bids <= 3 * bids &&
                    (free_columns || gap * kEpsDivisor * kEpsDivisor <= nd * eps);
  if (!calm) return std::max(eps / kEpsDivisor, eps_floor);
  // With free columns the jump can go further: uniform 1024x4096 in 4 phases instead of 5.
  const double divisor = free_columns ? kEpsDivisor * kEpsDivisor : kEpsDivisor;
  return std::max(std::min(eps, gap / nd) / divisor, eps_floor);
}

}  // namespace

bool auction_duals(const double* cost, int64_t n, double relative_gap, double max_passes,
                   std::vector<int64_t>& x, std::vector<double>& v) {
  const PreparedCost prepared = prepare(cost, n, n);
  // Integer costs keep the exact solver's tie rules; +inf or far-offset costs would need the
  // prepared copy's duals translated back. Neither is the case this serves.
  if (prepared.cost != cost || prepared.integral || prepared.range == 0.0) return false;
  Auction auction(cost, n, n, max_passes * static_cast<double>(n) * static_cast<double>(n));
  const double eps_floor = prepared.range * 1e-15;
  double eps = prepared.range / 4.0;
  for (;;) {
    if (!auction.run_phase(eps)) return false;
    const double gap = auction.duality_gap_and_shift();
    if (gap <= relative_gap * std::abs(auction.primal()) || eps <= eps_floor) break;
    eps = next_eps(eps, gap, n, n, auction.bids(), auction.tied_bids(), eps_floor);
  }
  x = auction.assignment();
  v = auction.duals();
  return true;
}

LapStatus solve_lap_auction(const double* cost, int64_t n, int64_t m, double tol,
                            double max_passes, int64_t* row_to_col) {
  if (n == 0) return LapStatus::kOk;
  const PreparedCost prepared = prepare(cost, n, m);
  const double* c = prepared.cost;
  Auction auction(c, n, m, max_passes * static_cast<double>(n) * static_cast<double>(m));
  // On integer costs a phase at eps = 0.5/n ends with gap <= 0.5 < 1, which proves the integer
  // optimum: eps never needs to go lower.
  const double eps_floor = prepared.integral ? 0.5 / static_cast<double>(n)
                                             : std::max(prepared.range, 1.0) * 1e-15;
  // Integer costs with few distinct values (a row's minimum occurs kFewValuesMultiplicity times
  // or more on average; all-equal costs included) start at the floor: coarse phases there only
  // leave price steps that later phases must bid away in eps-sized steps (integers 0..3 at
  // 1024 x 1024: 7.5 ms from range/4, 2.4 ms from the floor). With many distinct values the
  // floor would start a bidding war instead (integers 0..999: 59 ms against 31 ms), and
  // eps-scaling starts coarse, at a quarter of the range, where the auction is fast.
  const bool few_values =
      prepared.integral && prepared.at_row_minima >= kFewValuesMultiplicity * n;
  double eps = few_values || prepared.range == 0.0 ? eps_floor
                                                    : std::max(prepared.range / 4.0, eps_floor);
  for (;;) {
    if (!auction.run_phase(eps)) return solve_lap_exact(cost, n, m, row_to_col);
    const double gap = auction.duality_gap_and_shift();
    const double total = auction.primal() + static_cast<double>(n) * prepared.offset;
    const double target = tol > 0.0 ? tol : 1e-6 * std::abs(total);
    // On integer costs a gap below 1 proves the optimum, whatever tol asks.
    if (gap <= target || (prepared.integral && gap < 1.0) || eps <= eps_floor) break;
    eps = next_eps(eps, gap, n, m, auction.bids(), auction.tied_bids(), eps_floor);
  }
  const std::vector<int64_t>& x = auction.assignment();
  for (int64_t i = 0; i < n; ++i) {
    if (c[i * m + x[i]] >= prepared.penalty) return LapStatus::kInfeasible;
    row_to_col[i] = x[i];
  }
  return LapStatus::kOk;
}

}  // namespace immiscible::cpu
