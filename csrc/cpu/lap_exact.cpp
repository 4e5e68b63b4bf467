// Exact linear assignment: Jonker-Volgenant shortest augmenting paths in float64.
//
// Dual variables are kept for columns only (v); a row's dual is implied as
// u_i = min_j (c_ij - v_j). Square problems get LAPJV's initialization, which on dense random
// costs leaves only a few percent of rows for the expensive Dijkstra phase. Rectangular problems
// (n < m) start from a row reduction with v = 0: optimality there needs every unassigned column
// to keep v_j = 0 = max_j v_j, which the augmentation preserves (it only lowers v of columns it
// scanned, and those are assigned) but column reduction would not. Square problems that the
// initialization leaves with many free rows (low-dimensional costs) take their duals from
// auction phases instead (warm_start_from_auction).
//
// Ties (integer or repeated costs) get their own rules, which continuous costs never reach: row
// reduction takes a free column at a tied minimum instead of displacing another row, and the
// rows still free then augment along tight pairs from all free rows at once before any
// Dijkstra search. On 1024x1024 integer or equal costs no Dijkstra search is left.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/lap_solvers.h"
#include "cpu/lap_exact_kernels.h"

namespace immiscible::cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
using Index = int64_t;

class JonkerVolgenant {
 public:
  JonkerVolgenant(const double* cost, Index n, Index m)
      : c_(cost), n_(n), m_(m), x_(n, -1), y_(m, -1), v_(m, 0.0), d_(m), live_(m), pred_(m), free_pos_(m) {}

  LapStatus solve(int64_t* row_to_col) {
    std::vector<Index> free_rows;
    if (n_ == m_) {
      if (!column_reduction(free_rows)) return LapStatus::kInfeasible;
      for (int pass = 0; pass < 2 && !free_rows.empty(); ++pass) {
        if (!augmenting_row_reduction(free_rows)) return LapStatus::kInfeasible;
      }
      if (static_cast<Index>(free_rows.size()) * kWarmStartFreeShare > n_) warm_start_from_auction(free_rows);
    } else {
      row_reduction(free_rows);
    }
    // Ties leave long zero-length augmenting paths (int0-100 at n=1024: ~150 settled columns
    // per Dijkstra search); a search from all free rows at once finds most of them for less.
    // Each phase reads every row at most once; int0-100 needs two (47 -> 3 -> 0 free rows).
    for (int phase = 0; saw_tie_ && phase < 4 && !free_rows.empty(); ++phase) {
      if (!tight_augment(free_rows)) break;
    }
    collect_free_columns();
    for (Index f : free_rows) {
      if (!augment(f)) return LapStatus::kInfeasible;
    }
    std::copy(x_.begin(), x_.end(), row_to_col);
    return LapStatus::kOk;
  }

 private:
  const double* row(Index i) const { return c_ + i * m_; }

  // Column reduction and reduction transfer (square only). v_j = min_i c_ij, each column
  // offered to its minimizing row; rows matched once then transfer their slack to v.
  bool column_reduction(std::vector<Index>& free_rows) {
    std::vector<Index> argmin(m_, 0);
    std::fill(v_.begin(), v_.end(), kInf);
    // Row-major sweep so the minimum over each column vectorizes.
    for (Index i = 0; i < n_; ++i) {
      const double* ci = row(i);
      for (Index j = 0; j < m_; ++j) {
        if (ci[j] < v_[j]) {
          v_[j] = ci[j];
          argmin[j] = i;
        }
      }
    }
    // Ascending, so a row that is the minimum of several columns keeps the lowest of them
    // (LAPJV scans downwards and keeps the highest: an all-equal cost then came out as
    // [n-1, 0, 1, ..., n-2] instead of the identity).
    std::vector<int32_t> matches(n_, 0);
    for (Index j = 0; j < m_; ++j) {
      if (v_[j] == kInf) return false;  // a column no row may take
      const Index i = argmin[j];
      if (++matches[i] == 1) {
        x_[i] = j;
        y_[j] = i;
      }
    }
    for (Index i = 0; i < n_; ++i) {
      if (matches[i] == 0) {
        free_rows.push_back(i);
      } else if (matches[i] == 1) {
        const double* ci = row(i);
        const Index j1 = x_[i];
        double min_slack = kInf;
        for (Index j = 0; j < m_; ++j) {
          if (j != j1) min_slack = std::min(min_slack, ci[j] - v_[j]);
        }
        if (min_slack < kInf) v_[j1] -= min_slack;
      }
    }
    return true;
  }

  // Square problems that LAPJV's initialization leaves with more than one row in
  // kWarmStartFreeShare free are low-dimensional costs (torchcfm's plans between 2-D or 8-D point
  // clouds): the high-dimensional immiscible costs leave 3-6 %. There the rows left free sit
  // across the cloud from the free columns, so every augmenting path crosses it and settles
  // about half of the columns (B = 2048, D = 2: 1.21 M settled columns, 2.3-3.4 s). Auction
  // phases (to a duality gap of kWarmStartGap of the total) first move the duals by the
  // transport; the rows they leave short of tight are freed, and the searches, now short, finish
  // exactly (7.5 k settled columns at D = 2). The auction declines integer costs (their tie rules
  // stay), +inf and far-offset costs, and bidding wars past its budget; the LAPJV state is then
  // kept.
  static constexpr Index kWarmStartFreeShare = 10;
  static constexpr double kWarmStartGap = 1e-3;
  static constexpr double kWarmStartPasses = 64.0;

  void warm_start_from_auction(std::vector<Index>& free_rows) {
    std::vector<Index> x;
    std::vector<double> v;
    if (!auction_duals(c_, n_, kWarmStartGap, kWarmStartPasses, x, v)) return;
    x_.swap(x);
    v_.swap(v);
    for (Index i = 0; i < n_; ++i) y_[x_[i]] = i;
    // With u_i = c_{i,x_i} - v_{x_i}, a column that some row would take for less than its own
    // column (min_i c_ij - u_i < v_j) gets that minimum as v_j, so no assigned row is undercut
    // there, and its own row, no longer tight, is freed. Lowering v only raises other rows'
    // reduced costs, so every row left assigned is tight.
    std::vector<double> lowest(m_, kInf);
    for (Index i = 0; i < n_; ++i) {
      const double* ci = row(i);
      const double u = ci[x_[i]] - v_[x_[i]];
      const double own = lowest[x_[i]];  // skipped: c - (c - v) may round off v
      for (Index j = 0; j < m_; ++j) lowest[j] = std::min(lowest[j], ci[j] - u);
      lowest[x_[i]] = own;
    }
    free_rows.clear();
    for (Index j = 0; j < m_; ++j) {
      if (!(lowest[j] < v_[j])) continue;
      v_[j] = lowest[j];
      free_rows.push_back(y_[j]);
      x_[y_[j]] = -1;
      y_[j] = -1;
    }
    std::sort(free_rows.begin(), free_rows.end());
    saw_tie_ = false;  // the ties the row reduction met were in the duals just replaced
  }

  // Rectangular start: each row takes its cheapest column if still free; v stays 0.
  void row_reduction(std::vector<Index>& free_rows) {
    for (Index i = 0; i < n_; ++i) {
      const double* ci = row(i);
      const Index j = std::min_element(ci, ci + m_) - ci;
      if (y_[j] < 0 && ci[j] < kInf) {
        x_[i] = j;
        y_[j] = i;
      } else {
        free_rows.push_back(i);
      }
    }
  }

  void two_smallest_slacks(const double* ci, double& u1, double& u2, Index& j1) const {
    if (kernels::has_avx2()) {
      kernels::two_smallest_avx2(ci, v_.data(), m_, u1, u2, j1);
    } else {
      kernels::two_smallest_scalar(ci, v_.data(), m_, u1, u2, j1);
    }
  }

  // First column j in [start, end) with c_ij - v_j == target and mark[j] < 0, or -1.
  Index first_unmarked_at(const double* ci, const Index* mark, Index start, double target,
                          Index end = -1) const {
    if (end < 0) end = m_;
    return kernels::has_avx2()
               ? kernels::first_unmarked_at_avx2(ci, v_.data(), mark, end, start, target)
               : kernels::first_unmarked_at_scalar(ci, v_.data(), mark, end, start, target);
  }

  // The second column after j1 holding the minimum slack u1, or -1.
  Index next_tied(const double* ci, Index j1, double u1) const {
    for (Index j = j1 + 1; j < m_; ++j) {
      if (ci[j] - v_[j] == u1) return j;
    }
    return -1;
  }

  // Gives row i a free column at slack 0 if it has one. Every slack is >= 0 before the
  // Dijkstra phase (v starts at the column minima and only decreases), so such a column is a
  // row minimum, found without the full two-smallest scan. The search resumes after the last
  // column taken, where free ones are likeliest.
  bool take_free_zero_slack(Index i) {
    const double* ci = row(i);
    Index j = first_unmarked_at(ci, y_.data(), zero_cursor_, 0.0);
    if (j < 0) j = first_unmarked_at(ci, y_.data(), 0, 0.0, zero_cursor_);
    if (j < 0) return false;
    x_[i] = j;
    y_[j] = i;
    zero_cursor_ = j + 1 < m_ ? j + 1 : 0;
    return true;
  }

  // One pass of augmenting row reduction: each free row takes its best column, lowering that
  // column's price to the row's second-best slack, and displaces the previous owner.
  bool augmenting_row_reduction(std::vector<Index>& free_rows) {
    std::vector<Index> next_free;
    const Index num_free = static_cast<Index>(free_rows.size());
    Index k = 0;
    // A displaced row is re-processed right away while the pass has taken fewer than eight
    // steps per free row; later ones wait for the next pass or the Dijkstra phase. LAPJV's own
    // bound ((rows taken so far) * m) only prevents cycling: on immiscible costs the chains it
    // allows cost more than the shortest paths they save. B=2048, D=4096, median of 3 seeds:
    // unbounded 206 ms, 2 steps/row 91 ms, 8 steps/row 75 ms, 16 steps/row 81 ms.
    const Index budget = 8 * num_free;
    Index steps = 0;
    while (k < num_free) {
      const Index i = free_rows[k++];
      ++steps;
      const double* ci = row(i);
      if (saw_tie_ && take_free_zero_slack(i)) continue;
      double u1, u2;
      Index j1;
      two_smallest_slacks(ci, u1, u2, j1);
      if (j1 < 0) return false;  // the row has no allowed column
      Index i0 = y_[j1];
      const bool strictly_best = u1 < u2;
      if (strictly_best && u2 < kInf) {
        v_[j1] -= u2 - u1;
      } else if (!strictly_best && i0 >= 0) {
        // A tie: any column at the minimum is as good as j1, so take a free one if there is
        // one (the row is then done, nobody displaced). LAPJV takes the second tied column and
        // displaces its owner, which on integer or equal costs passes rows back and forth
        // between a few columns and leaves nearly every row to the shortest-path phase.
        const Index free_j = first_unmarked_at(ci, y_.data(), j1 + 1, u1);
        saw_tie_ = true;
        if (free_j >= 0) {
          j1 = free_j;
          i0 = -1;
        } else if (const Index j2 = next_tied(ci, j1, u1); j2 >= 0) {
          j1 = j2;
          i0 = y_[j2];
        }
      }
      if (i0 >= 0) x_[i0] = -1;
      x_[i] = j1;
      y_[j1] = i;
      if (i0 >= 0) {
        if (strictly_best && u2 < kInf && steps < budget) {
          free_rows[--k] = i0;  // process the displaced row right away
        } else {
          next_free.push_back(i0);
        }
      }
    }
    free_rows.swap(next_free);
    return true;
  }

  // One phase of augmentation along tight pairs only (c_ij - v_j equal to row i's minimum
  // slack, which is its assigned column's): a breadth-first search from every free row at once,
  // each column joining the first tree that reaches it. A tree that reaches a free column
  // flips its path and stops growing. Along such a path every row moves to another column at
  // its minimum slack and v is untouched, so the duals stay valid. Returns whether any row got
  // a column; the rows still free go on to Dijkstra.
  bool tight_augment(std::vector<Index>& free_rows) {
    std::fill(pred_.begin(), pred_.end(), Index{-1});  // a column's parent row in its tree
    tree_root_.assign(n_, -1);
    std::vector<char> done(n_, 0);
    std::vector<Index>& queue = ready_;  // rows to scan, breadth first
    queue.assign(free_rows.begin(), free_rows.end());
    for (Index r : free_rows) tree_root_[r] = r;
    bool any = false;
    for (size_t head = 0; head < queue.size(); ++head) {
      const Index i = queue[head];
      const Index root = tree_root_[i];
      if (done[root]) continue;
      const double* ci = row(i);
      double u;
      if (x_[i] >= 0) {
        u = ci[x_[i]] - v_[x_[i]];
      } else {
        double u2;
        Index j1;
        two_smallest_slacks(ci, u, u2, j1);
        if (j1 < 0) continue;  // no allowed column; Dijkstra reports it
      }
      for (Index j = first_unmarked_at(ci, pred_.data(), 0, u); j >= 0;
           j = first_unmarked_at(ci, pred_.data(), j + 1, u)) {
        pred_[j] = i;
        if (y_[j] >= 0) {
          tree_root_[y_[j]] = root;
          queue.push_back(y_[j]);
          continue;
        }
        for (Index col = j, r = i;;) {  // flip the path back to the root
          const Index previous = x_[r];
          x_[r] = col;
          y_[col] = r;
          if (r == root) break;
          col = previous;
          r = pred_[col];
        }
        done[root] = 1;
        any = true;
        break;
      }
    }
    free_rows.erase(std::remove_if(free_rows.begin(), free_rows.end(),
                                   [&](Index r) { return done[r] != 0; }),
                    free_rows.end());
    return any;
  }

  // Dijkstra from free row f over reduced costs c_ij - v_j, then flips the path to the sink.
  // Dense form: every relaxation sweeps all m columns (AVX2 where the CPU has it). A finished
  // column drops out by parking its v at -inf (so c_ij - v_j = +inf never improves it) rather
  // than through a compacted index list; d_ keeps v_j + dist_j to restore v at the end.
  bool augment(Index f) {
    const double* cf = row(f);
    for (Index j = 0; j < m_; ++j) {
      live_[j] = cf[j] - v_[j];
      pred_[j] = f;
    }
    ready_.clear();
    double min_d;
    Index j = argmin_live(min_d);
    j = prefer_free(j, min_d);  // (a separate statement: min_d must be set first)
    while (y_[j] >= 0) {
      if (min_d == kInf) return false;  // no free column reachable: infeasible
      const Index i = y_[j];
      const double* ci = row(i);
      const double h = ci[j] - v_[j] - min_d;
      const double settled = min_d;
      d_[j] = v_[j] + min_d;
      v_[j] = -kInf;
      live_[j] = kInf;
      ready_.push_back(j);
      j = relax_and_argmin(ci, i, h, min_d);
      // A free column tied with the settled minimum keeps that distance, so a tie shows up as
      // an unchanged minimum; only then are the free columns looked at. Without this, tied
      // costs (integers, equal entries) settle every tied assigned column first: O(n^3).
      if (min_d == settled) j = prefer_free(j, min_d);
    }
    if (min_d == kInf) return false;
    for (Index r : ready_) v_[r] = d_[r] - min_d;
    remove_free(j);
    for (Index sink = j;;) {
      const Index i = pred_[sink];
      y_[sink] = i;
      std::swap(x_[i], sink);
      if (i == f) break;
    }
    return true;
  }

  // j, or the lowest free column at distance min_d when there is one.
  Index prefer_free(Index j, double min_d) const {
    if (y_[j] < 0) return j;
    Index best = -1;
    for (Index k : free_cols_) {
      if (live_[k] == min_d && (best < 0 || k < best)) best = k;
    }
    return best < 0 ? j : best;
  }

  void collect_free_columns() {
    free_cols_.clear();
    for (Index j = 0; j < m_; ++j) {
      if (y_[j] < 0) {
        free_pos_[j] = static_cast<Index>(free_cols_.size());
        free_cols_.push_back(j);
      }
    }
  }

  void remove_free(Index j) {
    const Index last = free_cols_.back();
    free_cols_[free_pos_[j]] = last;
    free_pos_[last] = free_pos_[j];
    free_cols_.pop_back();
  }

  Index relax_and_argmin(const double* ci, Index i, double h, double& min_d) {
    return kernels::has_avx2()
               ? kernels::relax_avx2(ci, v_.data(), live_.data(), pred_.data(), m_, i, h, min_d)
               : kernels::relax_scalar(ci, v_.data(), live_.data(), pred_.data(), m_, i, h, min_d);
  }

  Index argmin_live(double& min_d) const {
    const Index j = std::min_element(live_.begin(), live_.end()) - live_.begin();
    min_d = live_[j];
    return j;
  }

  const double* c_;
  Index n_, m_;
  std::vector<Index> x_, y_;
  std::vector<double> v_, d_, live_;
  std::vector<int64_t> pred_;
  std::vector<Index> ready_;
  std::vector<Index> tree_root_;  // tight_augment: the free row whose tree holds each row
  bool saw_tie_ = false;          // augmenting row reduction met a row with tied minima
  Index zero_cursor_ = 0;         // augmenting row reduction: where the slack-0 search resumes
  std::vector<Index> free_cols_, free_pos_;  // unassigned columns, and where each sits in the list
};

}  // namespace

LapStatus solve_lap_exact(const double* cost, int64_t n, int64_t m, int64_t* row_to_col) {
  if (n == 0) return LapStatus::kOk;
  return JonkerVolgenant(cost, n, m).solve(row_to_col);
}

}  // namespace immiscible::cpu
