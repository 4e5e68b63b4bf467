// Device side of the CUDA auction solver (csrc/cuda/linear_assignment_cuda.cu launches it).
//
// One algorithm, two kinds of worker group, chosen by a template parameter:
//   BlockGroup  one thread block solves one problem (many small problems at once);
//   GridGroup   a cooperative grid solves one problem at a time (one large problem).
// Everything, the epsilon schedule and the stopping test included, runs on the device, so a call
// is a single launch with no host synchronization and can be captured in a CUDA graph.
//
// The algorithm is the CPU twin's (csrc/cpu/lap_auction.cpp) with Jacobi instead of
// Gauss-Seidel bidding: in a round every unassigned row bids at once, each column keeps the
// highest bid, ties going to the lowest row. Bids are packed as (bid bits << 32 | ~row) and
// merged with a 64-bit atomicMax, whose result does not depend on the order of the atomics, so
// the solver is deterministic.
//
// The same source also compiles as plain C++ with the host shim of csrc/host_emulation/ (every
// GPU thread a std::thread), which is how the tests run it without a GPU. The only concession to
// that is IMMISCIBLE_BLOCK_SHARED below; on CUDA it is a plain __shared__ array.
#pragma once

#ifndef IMMISCIBLE_HOST_EMULATION
#include <cooperative_groups.h>
#endif

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda/launch_config.h"

// Block-scoped scratch declared inside a device function. On the host a function-local static
// would be shared by all emulated blocks, so the shim hands out per-block storage instead.
#ifdef IMMISCIBLE_HOST_EMULATION
#define IMMISCIBLE_BLOCK_SHARED(type, name, count) \
  type* name = ::immiscible::host::block_shared<type, count, __LINE__>()
#else
#define IMMISCIBLE_BLOCK_SHARED(type, name, count) __shared__ type name[count]
#endif

namespace immiscible::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kEpsDivisor = 7.0f;
constexpr int kMaxPhases = 64;
// 2^-21 of the cost range: a few float32 ulps of the largest price, below which a price step
// would round away.
constexpr float kEpsFloorScale = 4.76837158203125e-07f;

// Per-problem solver state. In BlockGroup mode with small M it lives in shared memory.
struct State {
  float* price;                // [M]
  int* owner;                  // [M] column -> row, -1 free
  int* x;                      // [M] row -> column, -1 unassigned (rows >= N are dummies)
  int* bid_col;                // [M] column a row bid on in the current round
  unsigned long long* key[2];  // [M] packed best bid per column, one buffer per round parity
  int* list[2];                // [M] bidders of a round, one buffer per round parity
  int* count;                  // [3] bidder counts, rotating over rounds
};

// Lays State out in state_bytes(m) bytes (launch_config.h).
__device__ inline State carve_state(unsigned char* base, int m) {
  const int m8 = (m + 1) / 2 * 2;
  State s;
  s.key[0] = reinterpret_cast<unsigned long long*>(base);
  s.key[1] = s.key[0] + m;
  int* ints = reinterpret_cast<int*>(s.key[1] + m);
  s.price = reinterpret_cast<float*>(ints);
  s.owner = ints + m8;
  s.x = ints + 2 * m8;
  s.bid_col = ints + 3 * m8;
  s.list[0] = ints + 4 * m8;
  s.list[1] = ints + 5 * m8;
  s.count = ints + 6 * m8;
  return s;
}

// The problem as the auction sees it: [M, M], costs shifted by their finite minimum, +inf
// replaced by a penalty, rows >= N dummies of zero cost.
struct Prepared {
  const float* cost;  // [N, M] original
  int n, m;
  float offset, penalty;
  __device__ __forceinline__ const float* row(int i) const {
    return i < n ? cost + static_cast<int64_t>(i) * m : nullptr;
  }
  __device__ __forceinline__ float at(const float* r, int j) const {
    if (r == nullptr) return 0.0f;
    const float c = __ldg(r + j);
    return c == INFINITY ? penalty : c - offset;
  }
};

struct BlockGroup {
  __device__ void sync() const { __syncthreads(); }
  __device__ int rank() const { return threadIdx.x; }
  __device__ int size() const { return blockDim.x; }
  __device__ int warp() const { return threadIdx.x / kWarpSize; }
  __device__ int warps() const { return blockDim.x / kWarpSize; }
  __device__ int block() const { return 0; }
  __device__ int blocks() const { return 1; }
};

struct GridGroup {
  __device__ void sync() const { cooperative_groups::this_grid().sync(); }
  __device__ int rank() const { return blockIdx.x * blockDim.x + threadIdx.x; }
  __device__ int size() const { return gridDim.x * blockDim.x; }
  __device__ int warp() const { return rank() / kWarpSize; }
  __device__ int warps() const { return size() / kWarpSize; }
  __device__ int block() const { return blockIdx.x; }
  __device__ int blocks() const { return gridDim.x; }
};

struct MinOp {
  template <class T> __device__ T operator()(T a, T b) const { return b < a ? b : a; }
};
struct MaxOp {
  template <class T> __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};
struct SumOp {
  template <class T> __device__ T operator()(T a, T b) const { return a + b; }
};

// Butterfly: every lane ends with the same value, combined in a fixed order.
template <class T, class Op>
__device__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// All threads of the block get the result. Needs blockDim.x a multiple of 32.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, T identity) {
  IMMISCIBLE_BLOCK_SHARED(double, scratch, kWarpSize);  // double: room for any T used here
  T* s = reinterpret_cast<T*>(scratch);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_reduce(v, op);
  if (lane == 0) s[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / kWarpSize) ? s[lane] : identity;
  v = warp_reduce(v, op);
  __syncthreads();  // scratch free again
  return v;
}

// Deterministic group reduction: blocks write partials, every block re-reduces them in the same
// order, so all threads of the grid see the bit-identical value.
template <class T, class Op>
__device__ T group_reduce(BlockGroup, T v, Op op, T identity, double*) {
  return block_reduce(v, op, identity);
}

template <class T, class Op>
__device__ T group_reduce(GridGroup g, T v, Op op, T identity, double* partials) {
  v = block_reduce(v, op, identity);
  T* p = reinterpret_cast<T*>(partials);
  if (threadIdx.x == 0) p[blockIdx.x] = v;
  g.sync();
  T acc = identity;
  for (int b = threadIdx.x; b < static_cast<int>(gridDim.x); b += blockDim.x) acc = op(acc, p[b]);
  acc = block_reduce(acc, op, identity);
  g.sync();  // partials free for the next reduction
  return acc;
}

// Best and second-best of c_ij + p_j over a set of columns; ties go to the lowest column.
struct Best {
  float best, second;
  int col;
};

__device__ __forceinline__ Best merge(const Best& a, const Best& b) {
  const bool b_wins = b.best < a.best || (b.best == a.best && b.col < a.col);
  const Best& w = b_wins ? b : a;
  const Best& l = b_wins ? a : b;
  return {w.best, fminf(w.second, l.best), w.col};
}

__device__ __forceinline__ Best scan_columns(const Prepared& pc, const float* row,
                                             const float* price, int begin, int stride) {
  Best r{INFINITY, INFINITY, INT_MAX};
  for (int j = begin; j < pc.m; j += stride) {
    const float t = pc.at(row, j) + price[j];
    if (t < r.second) {
      if (t < r.best) {
        r.second = r.best;
        r.best = t;
        r.col = j;
      } else {
        r.second = t;
      }
    }
  }
  return r;
}

__device__ __forceinline__ Best warp_merge(Best r) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    Best o;
    o.best = __shfl_xor_sync(kFullMask, r.best, offset);
    o.second = __shfl_xor_sync(kFullMask, r.second, offset);
    o.col = __shfl_xor_sync(kFullMask, r.col, offset);
    r = merge(r, o);
  }
  return r;
}

// Whole block on one row; every thread gets the result.
__device__ Best block_best(const Prepared& pc, const float* row, const float* price) {
  IMMISCIBLE_BLOCK_SHARED(Best, scratch, kWarpSize);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  Best r = warp_merge(scan_columns(pc, row, price, threadIdx.x, blockDim.x));
  if (lane == 0) scratch[warp] = r;
  __syncthreads();
  r = lane < static_cast<int>(blockDim.x / kWarpSize) ? scratch[lane]
                                                      : Best{INFINITY, INFINITY, INT_MAX};
  r = warp_merge(r);
  __syncthreads();
  return r;
}

__device__ __forceinline__ unsigned long long pack_bid(float bid, int row) {
  // bid >= 0 (prices are kept relative to their minimum), so its bits order like the value.
  return (static_cast<unsigned long long>(__float_as_uint(bid)) << 32) |
         static_cast<unsigned>(~row);
}

__device__ __forceinline__ void place_bid(const State& s, unsigned long long* key, int row,
                                          const Best& b, float eps) {
  const float old = s.price[b.col];
  // With one column there is no second best; eps alone keeps the step finite.
  const float step = (b.second == INFINITY ? 0.0f : b.second - b.best) + eps;
  float bid = old + step;
  // A step lost to rounding would stall the auction: always raise by at least one ulp.
  if (!(bid > old)) bid = nextafterf(old, INFINITY);
  s.bid_col[row] = b.col;
  atomicMax(key + b.col, pack_bid(bid, row));
}

__device__ __forceinline__ int load_volatile(const int* p) { return *const_cast<const volatile int*>(p); }

__device__ __forceinline__ void append(int* list, int* count, int row) {
  list[atomicAdd(count, 1)] = row;
}

// One phase at `eps`: every row bids until each holds a column. Returns false if the round
// cap was hit (the caller then completes the assignment greedily). Adds the rounds it ran to
// *rounds_run (a register; only the host emulation reads the total).
template <class G>
__device__ bool run_phase(G g, const Prepared& pc, const State& s, float eps, int max_rounds,
                          int* rounds_run) {
  const int m = pc.m;
  for (int j = g.rank(); j < m; j += g.size()) {
    s.owner[j] = -1;
    s.x[j] = -1;
    s.key[0][j] = 0ull;
    s.key[1][j] = 0ull;
    s.list[0][j] = j;
  }
  if (g.rank() == 0) {
    s.count[0] = m;
    s.count[1] = 0;
    s.count[2] = 0;
  }
  g.sync();
  for (int round = 0;; ++round) {
    const int bidders = load_volatile(s.count + round % 3);
    if (bidders == 0 || round >= max_rounds) {
      *rounds_run += round;
      return bidders == 0;
    }
    const int parity = round & 1;
    // Selects, not s.list[parity]: a run-time array index would put State in local memory.
    const int* list = parity ? s.list[1] : s.list[0];
    unsigned long long* key = parity ? s.key[1] : s.key[0];

    // Bid. A grid with fewer bidders than blocks gives each bidder a whole block.
    if (g.blocks() > 1 && bidders <= g.blocks()) {
      for (int k = g.block(); k < bidders; k += g.blocks()) {
        const int row = list[k];
        const Best b = block_best(pc, pc.row(row), s.price);
        if (threadIdx.x == 0) place_bid(s, key, row, b, eps);
      }
    } else {
      const int lane = threadIdx.x % kWarpSize;
      for (int k = g.warp(); k < bidders; k += g.warps()) {
        const int row = list[k];
        const Best b = warp_merge(scan_columns(pc, pc.row(row), s.price, lane, kWarpSize));
        if (lane == 0) place_bid(s, key, row, b, eps);
      }
    }
    g.sync();

    // Resolve: each bid-on column takes its best bidder; losers and evicted owners bid again.
    int* next_list = parity ? s.list[0] : s.list[1];
    int* next_count = s.count + (round + 1) % 3;
    unsigned long long* next_key = parity ? s.key[0] : s.key[1];
    if (g.rank() == 0) s.count[(round + 2) % 3] = 0;
    for (int k = g.rank(); k < bidders; k += g.size()) {
      const int row = list[k];
      if (static_cast<unsigned>(key[s.bid_col[row]]) != static_cast<unsigned>(~row))
        append(next_list, next_count, row);
    }
    for (int j = g.rank(); j < m; j += g.size()) {
      next_key[j] = 0ull;
      const unsigned long long kv = key[j];
      if (kv == 0ull) continue;
      const int row = ~static_cast<int>(static_cast<unsigned>(kv));
      const int evicted = s.owner[j];
      if (evicted >= 0) {
        s.x[evicted] = -1;
        append(next_list, next_count, evicted);
      }
      s.owner[j] = row;
      s.x[row] = j;
      s.price[j] = __uint_as_float(static_cast<unsigned>(kv >> 32));
    }
    g.sync();
  }
}

// Solves one problem with group g; writes row_to_col [N] and *status, and the bidding rounds
// it ran to rounds [2] (forward, reverse) unless that is nullptr (the CUDA kernels pass nullptr, so the counter
// compiles away there).
template <class G>
__device__ void solve_problem(G g, const float* cost, int n, int m, float tol, bool exact,
                              int max_rounds, const State& s, double* partials,
                              int64_t* row_to_col, int32_t* status, int32_t* rounds) {
  // Statistics of the finite entries: shift, range, integrality.
  float lo = INFINITY, hi = -INFINITY, integral = 1.0f;
  int has_nan = 0, has_neg_inf = 0;  // values the auction must not see (status 2 and 3)
  const int64_t total = static_cast<int64_t>(n) * m;
  for (int64_t k = g.rank(); k < total; k += g.size()) {
    const float c = __ldg(cost + k);
    has_nan |= c != c;
    has_neg_inf |= c == -INFINITY;
    if (c == INFINITY || c != c) continue;
    lo = fminf(lo, c);
    hi = fmaxf(hi, c);
    if (c != rintf(c)) integral = 0.0f;
  }
  lo = group_reduce(g, lo, MinOp{}, INFINITY, partials);
  hi = group_reduce(g, hi, MaxOp{}, -INFINITY, partials);
  integral = group_reduce(g, integral, MinOp{}, 1.0f, partials);
  has_nan = group_reduce(g, has_nan, MaxOp{}, 0, partials);
  has_neg_inf = group_reduce(g, has_neg_inf, MaxOp{}, 0, partials);
  if (has_nan || has_neg_inf) {  // same verdict in every thread of g, so all return together
    for (int i = g.rank(); i < n; i += g.size()) row_to_col[i] = -1;
    if (g.rank() == 0) *status = has_nan ? 2 : 3;
    if (rounds != nullptr && g.rank() == 0) rounds[0] = rounds[1] = 0;
    g.sync();
    return;
  }
  if (lo == INFINITY) lo = hi = 0.0f;  // all forbidden: any answer is infeasible
  const float range = hi - lo;
  Prepared pc{cost, n, m, lo, static_cast<float>((static_cast<double>(range) + 1.0) * (m + 1))};

  for (int j = g.rank(); j < m; j += g.size()) s.price[j] = 0.0f;
  g.sync();
  const float scale = range > 0.0f ? range : 1.0f;
  const float eps_floor = scale * kEpsFloorScale;
  float eps = scale / 4.0f;
  bool complete = true;
  int rounds_run = 0;
  for (int phase = 0; phase < kMaxPhases; ++phase) {
    complete = run_phase(g, pc, s, eps, max_rounds, &rounds_run);
    if (!complete) break;
    // Duality gap: primal - (sum_i min_j (c_ij + p_j) - sum_j p_j), in float64.
    double primal = 0.0, dual = 0.0;
    float pmin = INFINITY;
    const int lane = threadIdx.x % kWarpSize;
    for (int i = g.warp(); i < m; i += g.warps()) {
      const float* r = pc.row(i);
      float best = INFINITY;
      for (int j = lane; j < m; j += kWarpSize) best = fminf(best, pc.at(r, j) + s.price[j]);
      best = warp_reduce(best, MinOp{});
      if (lane == 0) {
        dual += best;
        primal += pc.at(r, s.x[i]);
      }
    }
    for (int j = g.rank(); j < m; j += g.size()) {
      dual -= s.price[j];
      pmin = fminf(pmin, s.price[j]);
    }
    primal = group_reduce(g, primal, SumOp{}, 0.0, partials);
    dual = group_reduce(g, dual, SumOp{}, 0.0, partials);
    pmin = group_reduce(g, pmin, MinOp{}, INFINITY, partials);
    // Prices matter only relative to each other (square problem); keeping them near zero keeps
    // float32 steps resolvable and bids non-negative.
    for (int j = g.rank(); j < m; j += g.size()) s.price[j] -= pmin;
    g.sync();

    const double gap = primal - dual;
    const double total_cost = primal + static_cast<double>(n) * lo;
    double target = exact ? 0.0 : (tol > 0.0f ? static_cast<double>(tol) : 1e-6 * fabs(total_cost));
    if (integral == 1.0f) target = fmin(target, 0.5);  // integer optimum: gap < 1 is exact
    if (gap <= target || eps <= eps_floor) break;
    eps = fmaxf(fminf(eps, static_cast<float>(gap / m)) / kEpsDivisor, eps_floor);
  }

  if (!complete) {
    // Round cap hit (never seen; a guard against a hang): finish with a valid assignment.
    if (g.rank() == 0) {
      int free_col = 0;
      for (int i = 0; i < m; ++i) {
        if (s.x[i] >= 0) continue;
        while (s.owner[free_col] >= 0) ++free_col;
        s.owner[free_col] = i;
        s.x[i] = free_col;
      }
    }
    g.sync();
  }

  int forbidden = 0;
  for (int i = g.rank(); i < n; i += g.size())
    forbidden |= __ldg(cost + static_cast<int64_t>(i) * m + s.x[i]) == INFINITY;
  forbidden = group_reduce(g, forbidden, MaxOp{}, 0, partials);
  for (int i = g.rank(); i < n; i += g.size()) row_to_col[i] = forbidden ? -1 : s.x[i];
  if (g.rank() == 0) *status = forbidden;
  if (rounds != nullptr && g.rank() == 0) {
    rounds[0] = rounds_run;
    rounds[1] = 0;
  }
  g.sync();  // state reusable by the next problem
}

}  // namespace immiscible::cuda
