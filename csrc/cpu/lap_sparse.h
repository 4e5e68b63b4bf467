// Exact linear assignment on a sparse cost (candidate lists) with dual potentials, and the dense
// pieces around it that make it exact on a dense cost: candidate selection and the certificate.
//
// The idea (docs/PERF.md "Candidate lists"): on high-dimensional distance costs a row's optimal
// column is among the few cheapest after subtracting column potentials, so the assignment on
// those candidates is almost always the dense optimum. Whether it is, the duals say: with
// u_i = c_{i,x_i} - v_{x_i}, the assignment x is optimal on the dense cost if every entry has
// c_ij - u_i - v_j >= -tol (and, for n < m, v <= 0 with v = 0 on unassigned columns). Entries
// that break it join the lists and the sparse problem is solved again, warm.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cpu/lap_solvers.h"

namespace immiscible::cpu {

// Row i's allowed columns are cols[start[i] .. start[i+1]) with costs in cost[...]; columns
// within a row are distinct.
struct SparseCost {
  int64_t n = 0, m = 0;
  std::vector<int64_t> start;  // [n + 1]
  std::vector<int32_t> cols;   // [E]
  std::vector<double> cost;    // [E]
};

// Builds a SparseCost from per-row (column, cost) lists given as equal-length flat arrays of
// row ids, columns and costs (any order, duplicates allowed: the first one seen is kept).
SparseCost build_sparse_cost(int64_t n, int64_t m, const std::vector<int64_t>& rows,
                             const std::vector<int32_t>& cols, const std::vector<double>& cost);

// Jonker-Volgenant on a SparseCost: LAPJV's initialization on square problems, v = 0 and a row
// reduction on rectangular ones, then Dijkstra (binary heap) from each free row. The state
// (x, v) can be kept between calls: `solve` continues from it, augmenting only the free rows.
class SparseJV {
 public:
  explicit SparseJV(const SparseCost* cost);

  // Starts from scratch (LAPJV initialization) and augments every row. Returns the first row
  // that found no free column through the graph (the graph holds no perfect matching for it),
  // or -1 when every row is assigned.
  int64_t solve_cold();
  // Augments the rows that are free now, keeping the duals; returns as solve_cold.
  int64_t solve_warm();

  // Replaces the graph (same n, m; a superset of the old edges for the state to stay valid).
  void set_cost(const SparseCost* cost) { c_ = cost; }
  // Frees row i and its column (its edges are about to change).
  void free_row(int64_t i);
  // Sets the state: x [n] (-1 free), v [m]. Rows whose assigned column is not a reduced-cost
  // minimum among their edges are freed, so every assigned row is tight.
  void set_state(const int64_t* x, const double* v);

  // The rows whose dual u_i = c_{i,x_i} - v_{x_i} went up since the last call (the roots and
  // rows of the search trees), ascending, and forgets them: only their entries can have turned
  // negative, as every other v only went down.
  std::vector<int64_t> take_raised_rows();

  const std::vector<int64_t>& x() const { return x_; }
  const std::vector<double>& v() const { return v_; }

 private:
  bool auction_start();
  bool column_reduction();
  void augmenting_row_reduction();
  void row_reduction();
  bool augment(int64_t f);
  double own_cost(int64_t i) const;

  const SparseCost* c_;
  int64_t n_, m_;
  std::vector<int64_t> x_, y_;
  std::vector<double> v_;
  std::vector<int64_t> free_rows_;
  // Dijkstra scratch, reset through `touched_` after each search.
  std::vector<double> dist_;
  std::vector<int64_t> pred_;
  std::vector<char> settled_;
  std::vector<int64_t> touched_, settled_list_;
  std::vector<char> raised_;
};

// The threads a dense pass may use: run(count, body) calls body(begin, end) over [0, count),
// split over `count` workers (torch's intra-op pool for one large problem, inline in a batch).
using RangeBody = std::function<void(int64_t, int64_t)>;
struct Workers {
  int64_t count = 1;
  std::function<void(int64_t count, const RangeBody& body)> run;
};
void run_serial(int64_t count, const RangeBody& body);

// What the certified path did, for tests and benchmarks.
struct CertifiedStats {
  int64_t edges = 0;       // candidate edges in the final sparse problem
  int64_t rounds = 0;      // certificate passes
  int64_t violations = 0;  // entries handed back by the certificate, all rounds
  int64_t dense_rows = 0;  // rows given all their columns (the graph had no matching for them)
  bool fell_back = false;  // rounds or dense rows ran out: the caller must solve densely
  bool declined = false;   // the probe declined the cost: the caller must solve densely
};

// A dense cost read in place: row i at data + i * row_stride, columns contiguous.
template <typename T>
struct DenseRows {
  const T* data;
  int64_t n, m, row_stride;
  const T* row(int64_t i) const { return data + i * row_stride; }
};

struct CertifiedOptions {
  int64_t row_candidates = 0;  // per row; 0: chosen by size
  int64_t col_candidates = 0;  // per column; 0: chosen by size
  int64_t max_rounds = 4;      // certificate passes before giving up
  bool force = false;          // skip the probe (tests: the path on costs it would decline)
};

// Exact assignment of a dense cost (n <= m, finite values) through candidate lists and the
// certificate. True with row_to_col certified optimal; false when the probe declines the cost,
// it holds a non-finite value, or the rounds run out: the caller then runs solve_lap_exact.
// T is float or double.
template <typename T>
bool solve_lap_certified(const DenseRows<T>& cost, const CertifiedOptions& options,
                         const Workers& workers, int64_t* row_to_col, CertifiedStats* stats);

// Whether the certified path is worth trying on an n x m cost (by size; the probe inside
// solve_lap_certified looks at the values).
bool certified_pays(int64_t n, int64_t m);

// The certificate alone, for any assignment x [n] and column duals v [m]: violations [n] gets,
// for row i with u_i = c_{i,x_i} - v_{x_i}, the number of entries with c_ij - u_i - v_j < -tol;
// bad_columns the number of columns breaking the rectangular conditions (v <= tol, and v
// within tol of 0 where no row is assigned). tol < 0 selects the solver's own tolerance.
template <typename T>
void certify(const DenseRows<T>& cost, const int64_t* x, const double* v, double tol,
             const Workers& workers, int64_t* violations, int64_t* bad_columns);

}  // namespace immiscible::cpu
