// The two inner loops of the exact solver, each in a portable scalar form and an AVX2 form chosen
// at run time (one wheel for every x86-64 CPU). Both forms do the same float64 operations in the
// same order per element, so they return identical results.
#pragma once

#include <cstdint>

namespace immiscible::cpu::kernels {

bool has_avx2();

// One step of a running (smallest u1 at j1, second-smallest u2) scan over values t: the scalar
// two-smallest loops here and the auction's bid search share it.
inline void take_two_smallest(double t, int64_t j, double& u1, double& u2, int64_t& j1) {
  if (t < u2) {
    if (t < u1) {
      u2 = u1;
      u1 = t;
      j1 = j;
    } else {
      u2 = t;
    }
  }
}

// Smallest slack u1 = min_j (c_j - v_j) at its first column j1 (-1 if all +inf), and the
// second-smallest u2 with multiplicity (u2 == u1 on a tie).
void two_smallest_scalar(const double* c, const double* v, int64_t m, double& u1, double& u2,
                         int64_t& j1);
void two_smallest_avx2(const double* c, const double* v, int64_t m, double& u1, double& u2,
                       int64_t& j1);

// First column j >= start with c_j - v_j == target and mark_j < 0, or -1: with mark = column
// owners, a free column at a row's minimum slack; with mark = search tree parents, the next
// unvisited column tight for the row.
int64_t first_unmarked_at_scalar(const double* c, const double* v, const int64_t* mark, int64_t m,
                             int64_t start, double target);
int64_t first_unmarked_at_avx2(const double* c, const double* v, const int64_t* mark, int64_t m,
                           int64_t start, double target);

// Dijkstra relaxation through row c (shift h): live_j = min(live_j, c_j - v_j - h), pred_j = row
// where it improved; returns the first argmin of live and its value in min_d.
int64_t relax_scalar(const double* c, const double* v, double* live, int64_t* pred, int64_t m,
                     int64_t row, double h, double& min_d);
int64_t relax_avx2(const double* c, const double* v, double* live, int64_t* pred, int64_t m,
                   int64_t row, double h, double& min_d);

// The auction's first look at a cost matrix: smallest and largest finite entry (lo = +inf, hi =
// -inf if there is none), whether any entry is +inf, whether every finite entry is an integer.
struct CostStats {
  double lo, hi;
  bool any_inf, integral;
};
CostStats cost_stats_scalar(const double* c, int64_t count);
CostStats cost_stats_avx2(const double* c, int64_t count);

}  // namespace immiscible::cpu::kernels
