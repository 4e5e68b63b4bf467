// Jonker-Volgenant on candidate lists: the dense solver's algorithm (lap_exact.cpp) with every
// sweep over m columns replaced by a walk over a row's edges and the Dijkstra minimum kept in a
// binary heap, so a search costs O(settled edges * log) instead of O(settled columns * m).
#include "cpu/lap_sparse.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <queue>
#include <utility>

namespace immiscible::cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

}  // namespace

SparseCost build_sparse_cost(int64_t n, int64_t m, const std::vector<int64_t>& rows,
                             const std::vector<int32_t>& cols, const std::vector<double>& cost) {
  SparseCost s;
  s.n = n;
  s.m = m;
  s.start.assign(n + 1, 0);
  for (int64_t r : rows) ++s.start[r + 1];
  for (int64_t i = 0; i < n; ++i) s.start[i + 1] += s.start[i];
  std::vector<int64_t> fill(s.start.begin(), s.start.end() - 1);
  std::vector<int32_t> c(rows.size());
  std::vector<double> w(rows.size());
  for (size_t e = 0; e < rows.size(); ++e) {
    const int64_t at = fill[rows[e]]++;
    c[at] = cols[e];
    w[at] = cost[e];
  }
  // Sorted by column within each row, duplicates dropped (the first occurrence kept).
  s.cols.reserve(c.size());
  s.cost.reserve(c.size());
  std::vector<std::pair<int32_t, int64_t>> order;
  int64_t out = 0;
  for (int64_t i = 0; i < n; ++i) {
    order.clear();
    for (int64_t e = s.start[i]; e < s.start[i + 1]; ++e) order.emplace_back(c[e], e);
    std::stable_sort(order.begin(), order.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    s.start[i] = out;
    for (size_t k = 0; k < order.size(); ++k) {
      if (k > 0 && order[k].first == order[k - 1].first) continue;
      s.cols.push_back(order[k].first);
      s.cost.push_back(w[order[k].second]);
      ++out;
    }
  }
  s.start[n] = out;
  return s;
}


SparseJV::SparseJV(const SparseCost* cost)
    : c_(cost), n_(cost->n), m_(cost->m), x_(n_, -1), y_(m_, -1), v_(m_, 0.0), dist_(m_, kInf),
      pred_(m_, -1), settled_(m_, 0), raised_(n_, 0) {}

std::vector<int64_t> SparseJV::take_raised_rows() {
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < n_; ++i) {
    if (raised_[i]) rows.push_back(i);
  }
  std::fill(raised_.begin(), raised_.end(), 0);
  return rows;
}

double SparseJV::own_cost(int64_t i) const {
  const int64_t j = x_[i];
  const int32_t* cols = c_->cols.data();
  // Rows are sorted by column: binary search for the assigned edge.
  const int32_t* lo = cols + c_->start[i];
  const int32_t* hi = cols + c_->start[i + 1];
  const int32_t* at = std::lower_bound(lo, hi, static_cast<int32_t>(j));
  return c_->cost[at - cols];
}

int64_t SparseJV::solve_cold() {
  std::fill(x_.begin(), x_.end(), -1);
  std::fill(y_.begin(), y_.end(), -1);
  std::fill(v_.begin(), v_.end(), 0.0);
  free_rows_.clear();
  if (n_ == m_ && auction_start()) {
    // every assigned row tight; the rest go to Dijkstra
  } else if (n_ == m_) {
    std::fill(x_.begin(), x_.end(), -1);
    std::fill(y_.begin(), y_.end(), -1);
    std::fill(v_.begin(), v_.end(), 0.0);
    free_rows_.clear();
    if (!column_reduction()) {
      // A column without edges: no perfect matching; start plainly and let the search say
      // which row is stuck.
      std::fill(x_.begin(), x_.end(), -1);
      std::fill(y_.begin(), y_.end(), -1);
      std::fill(v_.begin(), v_.end(), 0.0);
      free_rows_.clear();
      row_reduction();
    } else {
      for (int pass = 0; pass < 2 && !free_rows_.empty(); ++pass) augmenting_row_reduction();
    }
  } else {
    row_reduction();
  }
  return solve_warm();
}

int64_t SparseJV::solve_warm() {
  free_rows_.clear();
  for (int64_t i = 0; i < n_; ++i) {
    if (x_[i] < 0) free_rows_.push_back(i);
  }
  for (int64_t f : free_rows_) {
    if (!augment(f)) return f;
  }
  free_rows_.clear();
  return -1;
}

void SparseJV::free_row(int64_t i) {
  if (x_[i] >= 0) y_[x_[i]] = -1;
  x_[i] = -1;
}

void SparseJV::set_state(const int64_t* x, const double* v) {
  std::copy(v, v + m_, v_.begin());
  std::fill(y_.begin(), y_.end(), -1);
  for (int64_t i = 0; i < n_; ++i) {
    x_[i] = -1;
    const int64_t j = x[i];
    if (j < 0 || j >= m_ || y_[j] >= 0) continue;
    double own = kInf, best = kInf;
    for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
      const double r = c_->cost[e] - v_[c_->cols[e]];
      best = std::min(best, r);
      if (c_->cols[e] == j) own = r;
    }
    if (own < kInf && own <= best) {
      x_[i] = j;
      y_[j] = i;
    }
  }
}

// v_j = min over column j's edges, each column offered to its cheapest row (lowest column
// first); rows matched once transfer their slack to v (LAPJV's reduction transfer).
bool SparseJV::column_reduction() {
  std::vector<int64_t> argmin(m_, -1);
  std::fill(v_.begin(), v_.end(), kInf);
  for (int64_t i = 0; i < n_; ++i) {
    for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
      const int32_t j = c_->cols[e];
      if (c_->cost[e] < v_[j]) {
        v_[j] = c_->cost[e];
        argmin[j] = i;
      }
    }
  }
  std::vector<int32_t> matches(n_, 0);
  for (int64_t j = 0; j < m_; ++j) {
    if (argmin[j] < 0) return false;
    const int64_t i = argmin[j];
    if (++matches[i] == 1) {
      x_[i] = j;
      y_[j] = i;
    }
  }
  for (int64_t i = 0; i < n_; ++i) {
    if (matches[i] == 0) {
      free_rows_.push_back(i);
    } else if (matches[i] == 1) {
      const int64_t j1 = x_[i];
      double min_slack = kInf;
      for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
        if (c_->cols[e] != j1) min_slack = std::min(min_slack, c_->cost[e] - v_[c_->cols[e]]);
      }
      if (min_slack < kInf) v_[j1] -= min_slack;
    }
  }
  return true;
}

// One pass of LAPJV's augmenting row reduction over the free rows, with the dense solver's
// budget of eight steps per free row for re-processing displaced rows at once.
void SparseJV::augmenting_row_reduction() {
  std::vector<int64_t> next_free;
  const int64_t num_free = static_cast<int64_t>(free_rows_.size());
  const int64_t budget = 8 * num_free;
  int64_t k = 0, steps = 0;
  while (k < num_free) {
    const int64_t i = free_rows_[k++];
    ++steps;
    double u1 = kInf, u2 = kInf;
    int64_t j1 = -1, j2 = -1;
    for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
      const int32_t j = c_->cols[e];
      const double t = c_->cost[e] - v_[j];
      if (t < u2) {
        if (t < u1) {
          u2 = u1;
          j2 = j1;
          u1 = t;
          j1 = j;
        } else {
          u2 = t;
          j2 = j;
        }
      }
    }
    if (j1 < 0) {
      next_free.push_back(i);  // no edges: the search reports it
      continue;
    }
    int64_t i0 = y_[j1];
    const bool strictly_best = u1 < u2;
    if (strictly_best && u2 < kInf) {
      v_[j1] -= u2 - u1;
    } else if (!strictly_best && i0 >= 0 && j2 >= 0) {
      j1 = j2;
      i0 = y_[j2];
    }
    if (i0 >= 0) x_[i0] = -1;
    x_[i] = j1;
    y_[j1] = i;
    if (i0 >= 0) {
      if (strictly_best && u2 < kInf && steps < budget) {
        free_rows_[--k] = i0;
      } else {
        next_free.push_back(i0);
      }
    }
  }
  free_rows_.swap(next_free);
}

// Square start for long searches: Gauss-Seidel forward auction phases with eps-scaling on the
// edges (each bid reads one row's edges, where a Dijkstra step reads a row and pushes to a
// heap), then the dense warm start's repair: a column some other row would take for less than
// its owner's dual lowers its own dual to that and frees its owner, so every row left assigned
// is tight. Declines (false, state undefined) when the bids exceed their budget, which is what
// a graph without a perfect matching does.
bool SparseJV::auction_start() {
  double lo = kInf, hi = -kInf;
  for (double w : c_->cost) {
    lo = std::min(lo, w);
    hi = std::max(hi, w);
  }
  const double range = hi - lo;
  if (!(range > 0)) return false;
  // Phases down to eps = 1e-4 of the edge cost range: finer ones cost more bids than the
  // Dijkstra searches they save (B = 4096, D = 4096: 1e-4 95 ms, 1e-6 109 ms, one thread).
  const double eps_end = range * 1e-4;
  const double step = range;  // a row's stand-in second-best gap when it has one edge
  std::fill(v_.begin(), v_.end(), 0.0);
  std::vector<int64_t> queue;
  int64_t bids = 0;
  const int64_t max_bids = 64 * n_ * 8;
  for (double eps = range / 4;; eps = std::max(eps / 5, eps_end)) {
    std::fill(x_.begin(), x_.end(), -1);
    std::fill(y_.begin(), y_.end(), -1);
    queue.resize(n_);
    std::iota(queue.begin(), queue.end(), int64_t{0});
    for (size_t head = 0; head < queue.size(); ++head) {
      if (++bids > max_bids) return false;
      const int64_t i = queue[head];
      double w1 = kInf, w2 = kInf;
      int64_t j1 = -1;
      for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
        const double t = c_->cost[e] - v_[c_->cols[e]];
        if (t < w2) {
          if (t < w1) {
            w2 = w1;
            w1 = t;
            j1 = c_->cols[e];
          } else {
            w2 = t;
          }
        }
      }
      if (j1 < 0) return false;
      if (w2 == kInf) w2 = w1 + step;
      // Bid: row i takes j1 at a dual that leaves it eps worse than its second choice.
      v_[j1] -= (w2 - w1) + eps;
      const int64_t previous = y_[j1];
      y_[j1] = i;
      x_[i] = j1;
      if (previous >= 0) {
        x_[previous] = -1;
        queue.push_back(previous);
      }
    }
    if (eps <= eps_end) break;
  }
  std::vector<double> lowest(m_, kInf);
  for (int64_t i = 0; i < n_; ++i) {
    const double u = own_cost(i) - v_[x_[i]];
    for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
      const int32_t j = c_->cols[e];
      if (j != x_[i]) lowest[j] = std::min(lowest[j], c_->cost[e] - u);
    }
  }
  for (int64_t j = 0; j < m_; ++j) {
    if (!(lowest[j] < v_[j])) continue;
    v_[j] = lowest[j];
    x_[y_[j]] = -1;
    y_[j] = -1;
  }
  return true;
}

// Rectangular start: each row takes its cheapest edge if that column is still free; v = 0, so
// every unassigned column keeps the largest dual, as optimality needs when n < m.
void SparseJV::row_reduction() {
  for (int64_t i = 0; i < n_; ++i) {
    int64_t best_j = -1;
    double best = kInf;
    for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
      const double t = c_->cost[e] - v_[c_->cols[e]];
      if (t < best) {
        best = t;
        best_j = c_->cols[e];
      }
    }
    if (best_j >= 0 && y_[best_j] < 0) {
      x_[i] = best_j;
      y_[best_j] = i;
    } else {
      free_rows_.push_back(i);
    }
  }
}

// Dijkstra from free row f over reduced costs c_ij - u_i - v_j (u_i implied by the assigned
// edge, which is tight), then the path flipped and the duals of settled columns lowered by
// what they lack of the path length: v_j -= delta - dist_j. Columns settled at dist_j < delta
// are assigned, so on a rectangular problem free columns keep v = 0.
bool SparseJV::augment(int64_t f) {
  using Entry = std::pair<double, int64_t>;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  double u_f = kInf;
  for (int64_t e = c_->start[f]; e < c_->start[f + 1]; ++e) {
    u_f = std::min(u_f, c_->cost[e] - v_[c_->cols[e]]);
  }
  if (u_f == kInf) return false;
  auto relax = [&](int64_t i, double base, double u_i) {
    for (int64_t e = c_->start[i]; e < c_->start[i + 1]; ++e) {
      const int32_t j = c_->cols[e];
      if (settled_[j]) continue;
      const double d = base + (c_->cost[e] - v_[j] - u_i);
      if (d < dist_[j]) {
        if (dist_[j] == kInf) touched_.push_back(j);
        dist_[j] = d;
        pred_[j] = i;
        heap.emplace(d, j);
      }
    }
  };
  relax(f, 0.0, u_f);
  int64_t sink = -1;
  double delta = 0.0;
  while (!heap.empty()) {
    const auto [d, j] = heap.top();
    heap.pop();
    if (settled_[j] || d > dist_[j]) continue;
    settled_[j] = 1;
    settled_list_.push_back(j);
    if (y_[j] < 0) {
      sink = j;
      delta = d;
      break;
    }
    const int64_t i = y_[j];
    relax(i, d, own_cost(i) - v_[j]);
  }
  if (sink >= 0) {
    raised_[f] = 1;
    for (int64_t j : settled_list_) {
      v_[j] -= delta - dist_[j];
      if (y_[j] >= 0) raised_[y_[j]] = 1;
    }
    for (int64_t j = sink;;) {
      const int64_t i = pred_[j];
      y_[j] = i;
      std::swap(x_[i], j);
      if (i == f) break;
    }
  }
  for (int64_t j : touched_) {
    dist_[j] = kInf;
    settled_[j] = 0;
  }
  touched_.clear();
  settled_list_.clear();
  return sink >= 0;
}

void run_serial(int64_t count, const RangeBody& body) {
  if (count > 0) body(0, count);
}

}  // namespace immiscible::cpu
