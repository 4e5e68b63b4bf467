// The certified exact path for dense costs: candidate lists from one threaded pass over the
// matrix, the sparse Jonker-Volgenant (lap_sparse.cpp) on them, and a certificate pass that
// either proves the answer optimal on the whole matrix or hands the violating entries back.
// The matrix is read in its own dtype (float32 or float64), in place: besides it, memory is
// O((n + m) * k).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>

#include "cpu/lap_exact_kernels.h"
#include "cpu/lap_sparse.h"

namespace immiscible::cpu {
namespace {

// The 32-byte vectors never cross a non-inlined call boundary between targets: -Wpsabi's ABI
// note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef double Vd __attribute__((vector_size(32)));
typedef int64_t Vi __attribute__((vector_size(32)));
typedef float Vf __attribute__((vector_size(16)));
constexpr int kLanes = 4;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Row kernels (lap_certified_kernels.inc), compiled for AVX2 (chosen at run time) and for the
// x86-64 baseline, and the small sorted lists they fill.

// Keeps the k smallest (value, index) seen, ascending; `limit` is the admission threshold
// (the k-th value once full, or a caller's bound).
struct SmallestK {
  double* val;
  int32_t* idx;
  int64_t k, size = 0;
  double limit;
  void offer(double t, int32_t j) {
    if (!(t < limit)) return;
    int64_t at = size < k ? size++ : k - 1;
    while (at > 0 && val[at - 1] > t) {
      val[at] = val[at - 1];
      idx[at] = idx[at - 1];
      --at;
    }
    val[at] = t;
    idx[at] = j;
    if (size == k) limit = std::min(limit, val[k - 1]);
  }
};

struct Hit {
  double value;
  int32_t col;
  bool operator<(const Hit& other) const { return value < other.value; }
};

// Column candidates: each column's k smallest offers c_ij - v_j - u_i, per block of rows.
struct ColumnLists {
  int64_t k;
  std::vector<double> val;     // [m, k] ascending per column
  std::vector<int32_t> row;    // [m, k]
  std::vector<int64_t> size;   // [m]
  std::vector<double> limit;   // [m]
  ColumnLists(int64_t m, int64_t k_)
      : k(k_), val(m * k_), row(m * k_), size(m, 0), limit(m, kInf) {}
  void offer(int64_t j, double t, int32_t i) {
    SmallestK s{val.data() + j * k, row.data() + j * k, k, size[j], limit[j]};
    s.offer(t, i);
    size[j] = s.size;
    limit[j] = s.limit;
  }
};

namespace avx2 {
#define IMMISCIBLE_KERNEL_AVX2 1
#define IMMISCIBLE_KERNEL __attribute__((target("avx2")))
#include "cpu/lap_certified_kernels.inc"
#undef IMMISCIBLE_KERNEL
#undef IMMISCIBLE_KERNEL_AVX2
}  // namespace avx2

namespace plain {
#define IMMISCIBLE_KERNEL
#include "cpu/lap_certified_kernels.inc"
#undef IMMISCIBLE_KERNEL
}  // namespace plain

template <typename T>
void add_row(const T* c, int64_t m, double* s, double& a) {
  kernels::has_avx2() ? avx2::add_row(c, m, s, a) : plain::add_row(c, m, s, a);
}
template <typename T>
double row_min(const T* c, const double* v, int64_t m, bool& finite) {
  return kernels::has_avx2() ? avx2::row_min(c, v, m, finite) : plain::row_min(c, v, m, finite);
}
template <typename T>
void offer_row(const T* c, const double* v, int64_t m, double s, SmallestK& b) {
  kernels::has_avx2() ? avx2::offer_row(c, v, m, s, b) : plain::offer_row(c, v, m, s, b);
}
template <typename T>
int64_t scan_row(const T* c, const double* v, int64_t m, double u, double rl, int32_t i, Hit* h,
                 ColumnLists& l) {
  return kernels::has_avx2() ? avx2::scan_row(c, v, m, u, rl, i, h, l)
                             : plain::scan_row(c, v, m, u, rl, i, h, l);
}

// Row blocks, one per worker: [block * n / blocks, (block + 1) * n / blocks).
int64_t block_begin(int64_t block, int64_t blocks, int64_t n) { return block * n / blocks; }

// ---------------------------------------------------------------------------------------------
// The probe: costs whose optimum is not unique in a structured way keep the dense solver's tie
// rule (docs: identity on constant and column-constant costs), and integer costs its tie
// handling. A few sampled rows decide: identical rows, integer-only rows, or rows whose values
// repeat much more than rounding explains.
template <typename T>
bool probe_accepts(const DenseRows<T>& c) {
  const int64_t n = c.n, m = c.m;
  if (n < 2) return false;
  if (std::equal(c.row(0), c.row(0) + m, c.row(1))) return false;
  const int64_t samples[] = {0, n / 2, n - 1};
  std::vector<double> values(m);
  for (int64_t i : samples) {
    const T* r = c.row(i);
    bool integral = true;
    for (int64_t j = 0; j < m; ++j) {
      values[j] = static_cast<double>(r[j]);
      integral = integral && values[j] == std::floor(values[j]);
    }
    if (integral) return false;
    std::sort(values.begin(), values.end());
    int64_t repeats = 0;
    for (int64_t j = 1; j < m; ++j) repeats += values[j] == values[j - 1];
    if (repeats * 4 > m) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The dense passes.

// Column means v [m] over every step-th row (about 1024 rows: the potentials only rank each
// row's candidates, and a full pass costs as much as the certificate, 50 ms at B = 8192 in
// float64), and the largest |c| among them.
template <typename T>
void column_means(const DenseRows<T>& c, const Workers& workers, std::vector<double>& v,
                  double& max_abs) {
  const int64_t n = c.n, m = c.m, step = std::max<int64_t>(1, n / 1024);
  const int64_t sampled = (n + step - 1) / step;
  const int64_t blocks = std::max<int64_t>(1, std::min(workers.count, sampled));
  std::vector<double> sums(blocks * m, 0.0), big(blocks, 0.0);
  workers.run(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t s = block_begin(b, blocks, sampled); s < block_begin(b + 1, blocks, sampled); ++s) {
        add_row(c.row(s * step), m, sums.data() + b * m, big[b]);
      }
    }
  });
  v.assign(m, 0.0);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t j = 0; j < m; ++j) v[j] += sums[b * m + j];
  }
  for (int64_t j = 0; j < m; ++j) v[j] /= static_cast<double>(sampled);
  max_abs = *std::max_element(big.begin(), big.end());
}

// Candidate edges: each row's k_row smallest c_ij - v_j, and each column's k_col smallest
// c_ij - v_j - u_i (u_i the row's minimum): the rows that want the column most, so that every
// column has edges and a perfect matching exists.
template <typename T>
bool candidate_edges(const DenseRows<T>& c, const std::vector<double>& v, int64_t k_row,
                     int64_t k_col, const Workers& workers, std::vector<int64_t>& rows,
                     std::vector<int32_t>& cols) {
  const int64_t n = c.n, m = c.m, blocks = std::max<int64_t>(1, std::min(workers.count, n));
  k_row = std::min(k_row, m);
  k_col = std::min(k_col, n);
  std::vector<int32_t> row_best(n * k_row);
  std::vector<char> all_finite(blocks, 1);
  std::vector<ColumnLists> col_lists;
  col_lists.reserve(blocks);
  for (int64_t b = 0; b < blocks; ++b) col_lists.emplace_back(m, k_col);
  workers.run(blocks, [&](int64_t b0, int64_t b1) {
    std::vector<Hit> hits(m);
    std::vector<double> best_val(k_row), median;
    constexpr size_t kRecentRows = 31;
    for (int64_t b = b0; b < b1; ++b) {
      // A row's k-th value above its minimum varies by 3x between rows; 1.5 times the median
      // of the last rows' lets about 4k entries through and leaves about 12 % of the rows to a
      // second scan for their own k smallest (B = 4096, D = 4096; twice the previous row's
      // let 20k through).
      std::vector<double> recent;
      for (int64_t i = block_begin(b, blocks, n); i < block_begin(b + 1, blocks, n); ++i) {
        const T* ci = c.row(i);
        bool finite;
        const double u = row_min(ci, v.data(), m, finite);
        if (!finite || !std::isfinite(u)) {
          all_finite[b] = 0;
          return;
        }
        double row_limit = kInf;
        if (!recent.empty()) {
          median = recent;
          std::nth_element(median.begin(), median.begin() + median.size() / 2, median.end());
          row_limit = 1.5 * median[median.size() / 2];
        }
        const int64_t count = scan_row(ci, v.data(), m, u, row_limit, static_cast<int32_t>(i),
                                       hits.data(), col_lists[b]);
        int32_t* best_cols = row_best.data() + i * k_row;
        double kth;
        if (count >= k_row) {
          std::partial_sort(hits.begin(), hits.begin() + k_row, hits.begin() + count);
          for (int64_t t = 0; t < k_row; ++t) best_cols[t] = hits[t].col;
          kth = hits[k_row - 1].value;
        } else {
          SmallestK best{best_val.data(), best_cols, k_row, 0, kInf};
          offer_row(ci, v.data(), m, u, best);
          kth = best_val[k_row - 1];
        }
        if (recent.size() < kRecentRows) {
          recent.push_back(kth);
        } else {
          recent[i % kRecentRows] = kth;
        }
      }
    }
  });
  if (std::find(all_finite.begin(), all_finite.end(), 0) != all_finite.end()) return false;
  rows.clear();
  cols.clear();
  rows.reserve(n * k_row + m * k_col);
  cols.reserve(n * k_row + m * k_col);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < k_row; ++t) {
      rows.push_back(i);
      cols.push_back(row_best[i * k_row + t]);
    }
  }
  // Each column's k_col best over all blocks.
  std::vector<std::pair<double, int32_t>> merged;
  for (int64_t j = 0; j < m; ++j) {
    merged.clear();
    for (const ColumnLists& l : col_lists) {
      for (int64_t t = 0; t < l.size[j]; ++t) merged.emplace_back(l.val[j * k_col + t], l.row[j * k_col + t]);
    }
    const size_t keep = std::min<size_t>(k_col, merged.size());
    std::partial_sort(merged.begin(), merged.begin() + keep, merged.end());
    for (size_t t = 0; t < keep; ++t) {
      rows.push_back(merged[t].second);
      cols.push_back(static_cast<int32_t>(j));
    }
  }
  return true;
}

// Whether the rows' candidate columns (cols [count]) spread over the columns as on
// high-dimensional costs (the most listed column holds at most 8 times the average, B 1024..16384,
// D 64..4096: at most 3 times), rather than piling onto a few: squared distances between
// low-dimensional clouds, where each row lists the extreme points in its own direction (D = 2:
// 50 times the average), and whose optimum the lists then miss.
bool candidates_spread(const int32_t* cols, int64_t count, int64_t m) {
  std::vector<int64_t> listed(m, 0);
  for (int64_t e = 0; e < count; ++e) ++listed[cols[e]];
  const int64_t most = *std::max_element(listed.begin(), listed.end());
  return most * m <= 8 * count;
}

double certificate_tolerance(double scale) {
  // Reduced costs come out of float64 sums of terms up to `scale`; a few hundred ulps of slack
  // keeps rounding from failing an optimal answer, and bounds the excess over the optimum by
  // n * 1e-12 * scale.
  return 1e-12 * std::max(scale, std::numeric_limits<double>::min());
}

template <typename T>
double dual_scale(const DenseRows<T>& c, const int64_t* x, const double* v, double max_abs) {
  double scale = max_abs;
  for (int64_t j = 0; j < c.m; ++j) scale = std::max(scale, std::fabs(v[j]));
  for (int64_t i = 0; i < c.n; ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(c.row(i)[x[i]]) - v[x[i]]));
  }
  return scale;
}

// The rectangular half of the certificate: v <= tol everywhere and v = 0 (within tol) on the
// columns no row holds. Returns the number of columns that break it.
int64_t check_column_duals(int64_t n, int64_t m, const int64_t* x, const double* v, double tol) {
  if (n == m) return 0;
  std::vector<char> used(m, 0);
  for (int64_t i = 0; i < n; ++i) used[x[i]] = 1;
  int64_t bad = 0;
  for (int64_t j = 0; j < m; ++j) bad += v[j] > tol || (!used[j] && v[j] < -tol);
  return bad;
}

// One certificate pass over the rows in `subset` (all rows when null): the rows with an entry
// below u_i - tol, and for each up to `keep` of its most negative entries (as edges to add).
// Returns the number of violating rows.
template <typename T>
int64_t certificate_pass(const DenseRows<T>& c, const int64_t* x, const double* v, double tol,
                         int64_t keep, const Workers& workers,
                         const std::vector<int64_t>* subset, std::vector<int64_t>& rows,
                         std::vector<int32_t>& cols, int64_t* violations_per_row) {
  const int64_t n = c.n, m = c.m;
  const int64_t count = subset != nullptr ? static_cast<int64_t>(subset->size()) : n;
  const int64_t blocks = std::max<int64_t>(1, std::min(workers.count, count));
  std::vector<std::vector<std::pair<int64_t, int32_t>>> found(blocks);
  std::vector<int64_t> bad_rows(blocks, 0);
  workers.run(blocks, [&](int64_t b0, int64_t b1) {
    std::vector<double> val(keep);
    std::vector<int32_t> idx(keep);
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t k = block_begin(b, blocks, count); k < block_begin(b + 1, blocks, count); ++k) {
        const int64_t i = subset != nullptr ? (*subset)[k] : k;
        const T* ci = c.row(i);
        const double u = static_cast<double>(ci[x[i]]) - v[x[i]];
        int64_t violations = 0;
        bool finite;
        if (row_min(ci, v, m, finite) - u < -tol) {
          SmallestK worst{val.data(), idx.data(), keep, 0, -tol};
          offer_row(ci, v, m, u, worst);
          for (int64_t j = 0; j < m; ++j) violations += static_cast<double>(ci[j]) - v[j] - u < -tol;
          for (int64_t t = 0; t < worst.size; ++t) found[b].emplace_back(i, idx[t]);
          ++bad_rows[b];
        }
        if (violations_per_row != nullptr) violations_per_row[i] = violations;
      }
    }
  });
  for (const auto& f : found) {
    for (const auto& [i, j] : f) {
      rows.push_back(i);
      cols.push_back(j);
    }
  }
  return std::accumulate(bad_rows.begin(), bad_rows.end(), int64_t{0});
}

template <typename T>
void gather_costs(const DenseRows<T>& c, const std::vector<int64_t>& rows,
                  const std::vector<int32_t>& cols, std::vector<double>& out) {
  out.resize(rows.size());
  for (size_t e = 0; e < rows.size(); ++e) out[e] = static_cast<double>(c.row(rows[e])[cols[e]]);
}

// Candidate list lengths by size: long enough that the first sparse optimum is usually the
// dense one (unit-variance latents, D 64..16384: the optimal column's rank after subtracting
// column means is below 16 for 99.9 % of rows up to B = 8192).
void default_list_lengths(int64_t n, int64_t& k_row, int64_t& k_col) {
  k_row = n >= 8192 ? 16 : 12;
  k_col = 6;
}

}  // namespace

bool certified_pays(int64_t n, int64_t m) {
  // IMMISCIBLE_DISABLE_CERTIFIED=1 keeps every exact solve dense (benchmarks' before/after).
  static const bool disabled = std::getenv("IMMISCIBLE_DISABLE_CERTIFIED") != nullptr;
  // Where it overtakes the dense solver (one thread, L2 costs, D 64..4096, docs/PERF.md):
  // square from n = 1280 (1024: 11 vs 9-14 ms, 1536: 19-24 vs 34-64 ms); rectangular, whose
  // repairs restart cold, from n = 1536 (1024 x 4096: 32 vs 28 ms, 2048 x 4096: 63 vs 95 ms).
  const int64_t from = n == m ? 1280 : 1536;
  return !disabled && n >= from && m < (int64_t{1} << 31);
}

template <typename T>
bool solve_lap_certified(const DenseRows<T>& c, const CertifiedOptions& options,
                         const Workers& workers, int64_t* row_to_col, CertifiedStats* stats) {
  CertifiedStats local;
  CertifiedStats& st = stats != nullptr ? *stats : local;
  const int64_t n = c.n, m = c.m;
  if (n == 0 || m >= (int64_t{1} << 31) || (!options.force && !probe_accepts(c))) {
    st.declined = true;
    return false;
  }
  std::vector<double> v0;
  double max_abs = 0.0;
  column_means(c, workers, v0, max_abs);
  int64_t k_row, k_col;
  default_list_lengths(n, k_row, k_col);
  if (options.row_candidates > 0) k_row = options.row_candidates;
  if (options.col_candidates > 0) k_col = options.col_candidates;

  std::vector<int64_t> rows;
  std::vector<int32_t> cols;
  std::vector<double> costs;
  if (!candidate_edges(c, v0, k_row, k_col, workers, rows, cols)) {
    st.declined = true;  // +inf (forbidden pairs), NaN or -inf: the dense path handles those
    return false;
  }
  if (!options.force && !candidates_spread(cols.data(), n * std::min(k_row, m), m)) {
    st.declined = true;
    return false;
  }
  gather_costs(c, rows, cols, costs);
  SparseCost graph = build_sparse_cost(n, m, rows, cols, costs);
  SparseJV jv(&graph);

  // A row the graph cannot match gets all its columns (then it reaches every free column). A
  // few such rows are chance; more mean the lists miss the cost's structure.
  const int64_t max_dense_rows = 8;
  auto add_edges_and_rebuild = [&](const std::vector<int64_t>& new_rows,
                                   const std::vector<int32_t>& new_cols) {
    std::vector<double> new_costs;
    gather_costs(c, new_rows, new_cols, new_costs);
    rows.insert(rows.end(), new_rows.begin(), new_rows.end());
    cols.insert(cols.end(), new_cols.begin(), new_cols.end());
    costs.insert(costs.end(), new_costs.begin(), new_costs.end());
    graph = build_sparse_cost(n, m, rows, cols, costs);
    jv.set_cost(&graph);
  };
  auto solve_until_matched = [&](int64_t stuck) {
    while (stuck >= 0) {
      if (++st.dense_rows > max_dense_rows) return false;
      std::vector<int64_t> r(m, stuck);
      std::vector<int32_t> all(m);
      std::iota(all.begin(), all.end(), 0);
      add_edges_and_rebuild(r, all);
      stuck = jv.solve_warm();
    }
    return true;
  };
  if (!solve_until_matched(jv.solve_cold())) {
    st.fell_back = true;
    return false;
  }
  const int64_t keep = std::max<int64_t>(k_row, 8);
  bool warm = false;
  for (int64_t round = 0;; ++round) {
    const double tol =
        certificate_tolerance(dual_scale(c, jv.x().data(), jv.v().data(), max_abs));
    std::vector<int64_t> new_rows;
    std::vector<int32_t> new_cols;
    ++st.rounds;
    // After a warm repair only the rows whose dual went up can fail; the first pass, and any
    // after a cold restart, reads every row.
    const std::vector<int64_t> raised = jv.take_raised_rows();
    const int64_t bad_rows = certificate_pass(c, jv.x().data(), jv.v().data(), tol, keep,
                                              workers, warm ? &raised : nullptr, new_rows,
                                              new_cols, nullptr);
    const int64_t bad_cols = check_column_duals(n, m, jv.x().data(), jv.v().data(), tol);
    st.violations += static_cast<int64_t>(new_rows.size()) + bad_cols;
    if (bad_rows == 0 && bad_cols == 0) break;
    // Distance costs in high dimension leave under 2 % of the rows to repair; many more
    // mean the candidates miss the structure, and the dense solver is the faster way on.
    if (round + 1 >= options.max_rounds || (!options.force && bad_rows * 8 > n)) {
      st.fell_back = true;
      return false;
    }
    add_edges_and_rebuild(new_rows, new_cols);
    int64_t stuck;
    if (n == m && bad_cols == 0) {
      // Square: freeing the violating rows keeps every other row tight on its (unchanged)
      // edges, so the search continues from the current duals.
      for (int64_t i : new_rows) jv.free_row(i);
      stuck = jv.solve_warm();
      warm = true;
    } else {
      // Rectangular: a freed column would keep a negative dual, which optimality forbids for
      // unassigned columns when n < m; start over on the larger graph.
      stuck = jv.solve_cold();
      warm = false;
    }
    if (!solve_until_matched(stuck)) {
      st.fell_back = true;
      return false;
    }
  }
  st.edges = static_cast<int64_t>(graph.cols.size());
  std::copy(jv.x().begin(), jv.x().end(), row_to_col);
  return true;
}

template <typename T>
void certify(const DenseRows<T>& c, const int64_t* x, const double* v, double tol,
             const Workers& workers, int64_t* violations_per_row, int64_t* bad_columns) {
  if (tol < 0) {
    double max_abs = 0.0;
    for (int64_t i = 0; i < c.n; ++i) {
      for (int64_t j = 0; j < c.m; ++j) max_abs = std::max(max_abs, std::fabs(static_cast<double>(c.row(i)[j])));
    }
    tol = certificate_tolerance(dual_scale(c, x, v, max_abs));
  }
  std::vector<int64_t> rows;
  std::vector<int32_t> cols;
  certificate_pass(c, x, v, tol, 1, workers, nullptr, rows, cols, violations_per_row);
  *bad_columns = check_column_duals(c.n, c.m, x, v, tol);
}

template bool solve_lap_certified<float>(const DenseRows<float>&, const CertifiedOptions&,
                                         const Workers&, int64_t*, CertifiedStats*);
template bool solve_lap_certified<double>(const DenseRows<double>&, const CertifiedOptions&,
                                          const Workers&, int64_t*, CertifiedStats*);
template void certify<float>(const DenseRows<float>&, const int64_t*, const double*, double,
                             const Workers&, int64_t*, int64_t*);
template void certify<double>(const DenseRows<double>&, const int64_t*, const double*, double,
                              const Workers&, int64_t*, int64_t*);

}  // namespace immiscible::cpu
