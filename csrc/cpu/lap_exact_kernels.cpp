#include "cpu/lap_exact_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace immiscible::cpu::kernels {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Four-lane vectors via GCC/Clang vector extensions: single registers inside AVX2 functions.
// (Under the SSE2 baseline these split into pairs and lose to the scalar loops, hence the split.)
typedef double Vd __attribute__((vector_size(32)));
typedef int64_t Vi __attribute__((vector_size(32)));
constexpr int kLanes = 4;
// Cost rows come from DRAM (a 2048x2048 float64 cost is 32 MB) and the hardware prefetcher stops
// at every 4 KB page; asking 2 KB ahead keeps the row streaming (B=2048: 70 -> 61 ms).
constexpr int64_t kPrefetchAhead = 256;

#define IMMISCIBLE_AVX2 __attribute__((target("avx2")))

IMMISCIBLE_AVX2 inline Vd load(const double* p) {
  Vd v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
IMMISCIBLE_AVX2 inline Vi load(const int64_t* p) {
  Vi v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
IMMISCIBLE_AVX2 inline void store(double* p, Vd v) { std::memcpy(p, &v, sizeof(v)); }
IMMISCIBLE_AVX2 inline void store(int64_t* p, Vi v) { std::memcpy(p, &v, sizeof(v)); }

// Folds lane minima (value, first index) into the scalar result, lowest index on ties.
template <typename V, typename I>
void fold_lanes(const V& best, const I& best_j, double& min_d, int64_t& arg) {
  for (int l = 0; l < kLanes; ++l) {
    if (best[l] < min_d || (best[l] == min_d && best_j[l] < arg)) {
      min_d = best[l];
      arg = best_j[l];
    }
  }
}

// One element of the scalar relaxation (also the tail of the vector one).
inline void relax_one(const double* c, const double* v, double* live, int64_t* pred, int64_t j,
                      int64_t row, double h, double& min_d, int64_t& arg) {
  const double t = c[j] - v[j] - h;
  if (t < live[j]) {
    live[j] = t;
    pred[j] = row;
  }
  if (live[j] < min_d) {
    min_d = live[j];
    arg = j;
  }
}

}  // namespace

bool has_avx2() {
  // IMMISCIBLE_DISABLE_AVX2=1 forces the portable loops (the tests compare both paths).
  static const bool available =
      __builtin_cpu_supports("avx2") && std::getenv("IMMISCIBLE_DISABLE_AVX2") == nullptr;
  return available;
}

void two_smallest_scalar(const double* c, const double* v, int64_t m, double& u1, double& u2,
                         int64_t& j1) {
  u1 = u2 = kInf;
  j1 = -1;
  for (int64_t j = 0; j < m; ++j) take_two_smallest(c[j] - v[j], j, u1, u2, j1);
}

IMMISCIBLE_AVX2 void two_smallest_avx2(const double* c, const double* v, int64_t m, double& u1,
                                       double& u2, int64_t& j1) {
  const Vd inf = {kInf, kInf, kInf, kInf};
  Vd b1 = inf, b2 = inf;
  Vi i1 = {-1, -1, -1, -1}, lane_j = {0, 1, 2, 3};
  int64_t j = 0;
  for (; j + kLanes <= m; j += kLanes) {
    const Vd t = load(c + j) - load(v + j);
    const Vi lower = t < b1;
    b2 = lower ? b1 : (t < b2 ? t : b2);
    b1 = lower ? t : b1;
    i1 = lower ? lane_j : i1;
    lane_j += kLanes;
  }
  u1 = u2 = kInf;
  j1 = -1;
  fold_lanes(b1, i1, u1, j1);
  // Second smallest over all lane candidates: the other lanes' minima and every lane's runner-up.
  bool skipped = false;
  for (int l = 0; l < kLanes; ++l) {
    if (!skipped && b1[l] == u1 && i1[l] == j1) {
      skipped = true;
    } else if (b1[l] < u2) {
      u2 = b1[l];
    }
    if (b2[l] < u2) u2 = b2[l];
  }
  for (; j < m; ++j) take_two_smallest(c[j] - v[j], j, u1, u2, j1);
  if (u1 == kInf) j1 = -1;
}

int64_t first_unmarked_at_scalar(const double* c, const double* v, const int64_t* mark, int64_t m,
                             int64_t start, double target) {
  for (int64_t j = start; j < m; ++j) {
    if (c[j] - v[j] == target && mark[j] < 0) return j;
  }
  return -1;
}

IMMISCIBLE_AVX2 int64_t first_unmarked_at_avx2(const double* c, const double* v,
                                           const int64_t* mark, int64_t m, int64_t start,
                                           double target) {
  const Vd tv = {target, target, target, target};
  const Vi zero = {0, 0, 0, 0};
  int64_t j = start;
  for (; j + kLanes <= m; j += kLanes) {
    const Vi hit = (load(c + j) - load(v + j) == tv) & (load(mark + j) < zero);
    if (hit[0] | hit[1] | hit[2] | hit[3]) {
      for (int l = 0; l < kLanes; ++l) {
        if (hit[l]) return j + l;
      }
    }
  }
  return first_unmarked_at_scalar(c, v, mark, m, j, target);
}

int64_t relax_scalar(const double* c, const double* v, double* live, int64_t* pred, int64_t m,
                     int64_t row, double h, double& min_d) {
  min_d = kInf;
  int64_t arg = 0;
  for (int64_t j = 0; j < m; ++j) relax_one(c, v, live, pred, j, row, h, min_d, arg);
  return arg;
}

IMMISCIBLE_AVX2 int64_t relax_avx2(const double* c, const double* v, double* live,
                                   int64_t* pred, int64_t m, int64_t row, double h,
                                   double& min_d) {
  const Vd hv = {h, h, h, h};
  const Vi rowv = {row, row, row, row};
  Vd best = {kInf, kInf, kInf, kInf};
  Vi best_j = {0, 0, 0, 0}, lane_j = {0, 1, 2, 3};
  int64_t j = 0;
  for (; j + kLanes <= m; j += kLanes) {
    __builtin_prefetch(c + j + kPrefetchAhead);
    const Vd t = load(c + j) - load(v + j) - hv;
    Vd d = load(live + j);
    const Vi improved = t < d;
    d = improved ? t : d;
    store(live + j, d);
    store(pred + j, improved ? rowv : load(pred + j));
    const Vi better = d < best;
    best = better ? d : best;
    best_j = better ? lane_j : best_j;
    lane_j += kLanes;
  }
  min_d = kInf;
  int64_t arg = m;
  fold_lanes(best, best_j, min_d, arg);
  for (; j < m; ++j) relax_one(c, v, live, pred, j, row, h, min_d, arg);
  return arg < m ? arg : 0;
}

namespace {

void add_to_stats(double c, CostStats& s) {
  if (c == kInf) {
    s.any_inf = true;
    return;
  }
  s.lo = std::min(s.lo, c);
  s.hi = std::max(s.hi, c);
  if (std::floor(c) != c) s.integral = false;
}

}  // namespace

CostStats cost_stats_scalar(const double* c, int64_t count) {
  CostStats s{kInf, -kInf, false, true};
  for (int64_t k = 0; k < count; ++k) add_to_stats(c[k], s);
  return s;
}

IMMISCIBLE_AVX2 CostStats cost_stats_avx2(const double* c, int64_t count) {
  const __m256d inf = _mm256_set1_pd(kInf), minus_inf = _mm256_set1_pd(-kInf);
  __m256d lo = inf, hi = minus_inf, any_inf = _mm256_setzero_pd(), fraction = any_inf;
  int64_t k = 0;
  for (; k + kLanes <= count; k += kLanes) {
    const __m256d x = _mm256_loadu_pd(c + k);
    const __m256d is_inf = _mm256_cmp_pd(x, inf, _CMP_EQ_OQ);
    any_inf = _mm256_or_pd(any_inf, is_inf);
    lo = _mm256_min_pd(lo, x);  // +inf never lowers it
    hi = _mm256_max_pd(hi, _mm256_blendv_pd(x, minus_inf, is_inf));
    fraction = _mm256_or_pd(fraction, _mm256_cmp_pd(x, _mm256_floor_pd(x), _CMP_NEQ_OQ));
  }
  double lanes_lo[kLanes], lanes_hi[kLanes];
  _mm256_storeu_pd(lanes_lo, lo);
  _mm256_storeu_pd(lanes_hi, hi);
  CostStats s{kInf, -kInf, _mm256_movemask_pd(any_inf) != 0, _mm256_movemask_pd(fraction) == 0};
  for (int l = 0; l < kLanes; ++l) {
    s.lo = std::min(s.lo, lanes_lo[l]);
    s.hi = std::max(s.hi, lanes_hi[l]);
  }
  for (; k < count; ++k) add_to_stats(c[k], s);
  return s;
}

}  // namespace immiscible::cpu::kernels
