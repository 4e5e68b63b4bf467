// Device side of the CUDA auction solver (csrc/cuda/linear_assignment_cuda.cu launches it).
//
// One algorithm, two kinds of worker group, chosen by a template parameter:
//   BlockGroup  one thread block solves one problem (many small problems at once);
//   GridGroup   a cooperative grid solves one problem at a time (one large problem).
// Everything, the epsilon schedule and the stopping test included, runs on the device, so a call
// is a single launch with no host synchronization and can be captured in a CUDA graph.
//
// The algorithm is the CPU twin's (csrc/cpu/lap_auction.cpp): the forward/reverse auction for
// asymmetric problems (N <= M, no dummy rows; spec: Bertsekas & Castanon 1992), with Jacobi
// instead of Gauss-Seidel bidding. Forward rounds: every unassigned row bids at once, each column
// keeps the highest bid, ties going to the lowest row; bids are packed as (bid bits << 32 | ~row)
// and merged with a 64-bit atomicMax. Reverse rounds: every unassigned column priced above the
// floor lambda offers itself to its best row at once, each row keeps the cheapest offer, ties to
// the lowest column; offers are packed as (value bits << 32 | column) and merged with atomicMin.
// Neither merge depends on the order of the atomics, so the solver is deterministic.
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
// Integer costs whose row minima occur this often on average start eps at its floor.
constexpr int64_t kFewValuesMultiplicity = 8;
constexpr int kMaxPhases = 64;
// 2^-21 of the cost range: a few float32 ulps of the largest price, below which a price step
// would round away.
constexpr float kEpsFloorScale = 4.76837158203125e-07f;

// Per-problem solver state. In BlockGroup mode with small M it lives in shared memory. Two
// pointers and a stride instead of one pointer per array: the kernel runs at its register cap,
// and every extra live pointer there is a spill.
struct State {
  unsigned long long* keys;  // key(0), key(1)
  int* ints;                 // the int and float arrays, m8 apart
  int m, m8;
  // forward [M]: best bid per column; reverse [N]: best offer per row; per round parity
  __device__ __forceinline__ unsigned long long* key(int parity) const { return keys + parity * m; }
  __device__ __forceinline__ float* price() const { return reinterpret_cast<float*>(ints); }  // [M]
  __device__ __forceinline__ int* owner() const { return ints + m8; }  // [M] column -> row, -1 free
  __device__ __forceinline__ int* x() const { return ints + 2 * m8; }  // [N] row -> column, -1
  // forward [N]: column a row bid on; reverse [M]: row a column offered itself to (-1: retired)
  __device__ __forceinline__ int* target() const { return ints + 3 * m8; }
  // [M] bidders (rows or columns) of a round, per round parity
  __device__ __forceinline__ int* list(int parity) const { return ints + (4 + parity) * m8; }
  // [M] reverse: the price a column offered itself at
  __device__ __forceinline__ float* offer() const {
    return reinterpret_cast<float*>(ints + 6 * m8);
  }
  // [3] rotating bidder counts, then [1] the forward bids of a phase whose best and second-best
  // columns tied
  __device__ __forceinline__ int* count() const { return ints + 7 * m8; }
  __device__ __forceinline__ int* tied_bids() const { return count() + 3; }
};

// Lays State out in state_bytes(m) bytes (launch_config.h).
__device__ inline State carve_state(unsigned char* base, int m) {
  State s;
  s.keys = reinterpret_cast<unsigned long long*>(base);
  s.ints = reinterpret_cast<int*>(s.keys + 2 * m);
  s.m = m;
  s.m8 = (m + 1) / 2 * 2;
  return s;
}

// The problem as the auction sees it: [N, M], costs shifted by their finite minimum, +inf
// replaced by a penalty.
struct Prepared {
  const float* cost;  // [N, M] original
  int n, m;
  float offset, penalty;
  __device__ __forceinline__ const float* row(int i) const {
    return cost + static_cast<int64_t>(i) * m;
  }
  __device__ __forceinline__ float at(const float* r, int j) const {
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

// Smallest and second-smallest of a set of values, with the index of the smallest (a column
// for a forward bid, a row for a reverse offer); ties go to the lowest index.
struct Best {
  float best, second;
  int col;
};

__device__ __forceinline__ void consider(Best& r, float t, int index) {
  if (t < r.second) {
    if (t < r.best) {
      r.second = r.best;
      r.best = t;
      r.col = index;
    } else {
      r.second = t;
    }
  }
}

__device__ __forceinline__ Best merge(const Best& a, const Best& b) {
  const bool b_wins = b.best < a.best || (b.best == a.best && b.col < a.col);
  const Best& w = b_wins ? b : a;
  const Best& l = b_wins ? a : b;
  return {w.best, fminf(w.second, l.best), w.col};
}

__device__ __forceinline__ Best scan_columns(const Prepared& pc, const float* row,
                                             const float* price, int begin, int stride) {
  Best r{INFINITY, INFINITY, INT_MAX};
  for (int j = begin; j < pc.m; j += stride) consider(r, pc.at(row, j) + price[j], j);
  return r;
}

// Reverse offer of column `col`: over rows, c_i,col - u_i, where u_i = c_i,x_i + p_x_i is row
// i's current value; the smallest is -beta1 (row i*), the second -beta2.
__device__ __forceinline__ Best scan_rows(const Prepared& pc, const State& s, int col, int begin,
                                          int stride) {
  Best r{INFINITY, INFINITY, INT_MAX};
  for (int i = begin; i < pc.n; i += stride) {
    const float* row = pc.row(i);
    const int k = s.x()[i];
    consider(r, pc.at(row, col) - (pc.at(row, k) + s.price()[k]), i);
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

// Merges every thread's partial over the block; every thread gets the result.
__device__ Best block_merge(Best r) {
  IMMISCIBLE_BLOCK_SHARED(Best, scratch, kWarpSize);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  r = warp_merge(r);
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

// Returns whether the bid tied (best and second best equal); the caller counts ties per thread
// and adds them once a round, not with an atomic per bid on one shared word.
__device__ __forceinline__ bool place_bid(const State& s, unsigned long long* key, int row,
                                          const Best& b, float eps) {
  const float old = s.price()[b.col];
  // With one column there is no second best; eps alone keeps the step finite.
  const float step = (b.second == INFINITY ? 0.0f : b.second - b.best) + eps;
  float bid = old + step;
  // A step lost to rounding would stall the auction: always raise by at least one ulp.
  if (!(bid > old)) bid = nextafterf(old, INFINITY);
  s.target()[row] = b.col;
  atomicMax(key + b.col, pack_bid(bid, row));
  return b.second == b.best;
}

// Reverse step of unassigned column `col` priced above lambda, given b from scan_rows: retire
// at lambda when no row would gain eps by taking it, else offer it to row i* at the price
// max(lambda, beta2 - eps), i.e. the value c_i*,col + price for i*.
__device__ __forceinline__ void place_offer(const Prepared& pc, const State& s,
                                            unsigned long long* key, int col, const Best& b,
                                            float eps, float lambda) {
  const float beta1 = -b.best, beta2 = -b.second;  // beta2 = -inf with one row
  if (beta1 - eps <= lambda) {
    s.price()[col] = lambda;  // nobody reads an unassigned column's price in this round
    s.target()[col] = -1;
    return;
  }
  float price = fmaxf(lambda, beta2 - eps);
  // As for forward bids: an offer that rounding left at beta1 would not lower row i*'s value and
  // could repeat until the round cap; always lower by at least one ulp (beta1 > lambda here).
  if (!(price < beta1)) price = nextafterf(beta1, -INFINITY);
  // value >= 0 (costs shifted to >= 0, prices >= lambda >= 0), so its bits order like it.
  const float value = pc.at(pc.row(b.col), col) + price;
  s.offer()[col] = price;
  s.target()[col] = b.col;
  atomicMin(key + b.col, (static_cast<unsigned long long>(__float_as_uint(value)) << 32) |
                             static_cast<unsigned>(col));
}

__device__ __forceinline__ int load_volatile(const int* p) { return *const_cast<const volatile int*>(p); }

// Appends `item` for every lane of the warp with `want`: one atomicAdd per warp on the shared
// count instead of one per item (the first forward round of B = 16384 has ~16K losers and
// evicted rows, all appending to one word); the lanes take consecutive slots. Every lane of the
// warp calls it together (for_each_warp_uniform).
__device__ __forceinline__ void append_warp(int* list, int* count, bool want, int item) {
  const unsigned ballot = __ballot_sync(kFullMask, want);
  if (ballot == 0u) return;
  const int lane = threadIdx.x % kWarpSize;
  const int leader = __ffs(static_cast<int>(ballot)) - 1;
  int base = 0;
  if (lane == leader) base = atomicAdd(count, __popc(ballot));
  base = __shfl_sync(kFullMask, base, leader);
  if (want) list[base + __popc(ballot & ((1u << lane) - 1u))] = item;
}

// A grid-stride loop over [0, end) in which the lanes of a warp run the same iterations (`in`
// is false past the end), so that they can vote together in append_warp. Ranks of a warp are
// consecutive in both groups.
template <class G, class Body>
__device__ __forceinline__ void for_each_warp_uniform(G g, int end, Body body) {
  const int lane = threadIdx.x % kWarpSize;
  for (int k0 = g.rank() - lane; k0 < end; k0 += g.size()) body(k0 + lane, k0 + lane < end);
}

// One bidding pass of a round, shared by the forward (rows) and reverse (columns) stages: each
// bidder's best/second best is scanned by a warp, or by a whole block when a grid has fewer
// bidders than blocks, and one thread places the result.
template <class G, class Scan, class Place>
__device__ __forceinline__ void for_each_bidder(G g, const int* list, int bidders, Scan scan,
                                                Place place) {
  if (g.blocks() > 1 && bidders <= g.blocks()) {
    for (int k = g.block(); k < bidders; k += g.blocks()) {
      const int who = list[k];
      const Best b = block_merge(scan(who, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x)));
      if (threadIdx.x == 0) place(who, b);
    }
  } else {
    const int lane = threadIdx.x % kWarpSize;
    for (int k = g.warp(); k < bidders; k += g.warps()) {
      const int who = list[k];
      const Best b = warp_merge(scan(who, lane, kWarpSize));
      if (lane == 0) place(who, b);
    }
  }
}

// Forward stage of a phase at `eps`: from an empty assignment, the rows bid until each holds a
// column. Every phase starts empty: keeping the rows that still meet eps-CS, as the CPU twin
// does, cost Jacobi rounds here (emulated pool 1024 x 4096: 259 rounds against 166).
// Returns false if the round cap was hit (the caller then completes the assignment greedily).
// Adds the rounds it ran to *rounds_run (a register; only the host emulation reads the total)
// and sets *bids to the bids placed (every thread sees the same counts).
template <class G>
__device__ bool forward_stage(G g, const Prepared& pc, const State& s, float eps, int max_rounds,
                              int* rounds_run, int64_t* bids) {
  const int n = pc.n, m = pc.m;
  *bids = 0;
  for (int j = g.rank(); j < m; j += g.size()) {
    s.owner()[j] = -1;
    s.key(0)[j] = 0ull;
    s.key(1)[j] = 0ull;
  }
  for (int i = g.rank(); i < n; i += g.size()) {
    s.x()[i] = -1;
    s.list(0)[i] = i;
  }
  if (g.rank() == 0) {
    s.count()[0] = n;
    s.count()[1] = 0;
    s.count()[2] = 0;
    *s.tied_bids() = 0;
  }
  g.sync();
  for (int round = 0;; ++round) {
    const int bidders = load_volatile(s.count() + round % 3);
    if (bidders == 0 || round >= max_rounds) {
      *rounds_run += round;
      return bidders == 0;
    }
    *bids += bidders;
    const int parity = round & 1;
    const int* list = s.list(parity);
    unsigned long long* key = s.key(parity);

    // Bid.
    int ties = 0;
    for_each_bidder(
        g, list, bidders,
        [&](int row, int begin, int stride) {
          return scan_columns(pc, pc.row(row), s.price(), begin, stride);
        },
        [&](int row, const Best& b) { ties += place_bid(s, key, row, b, eps); });
    if (ties) atomicAdd(s.tied_bids(), ties);
    g.sync();

    // Resolve: each bid-on column takes its best bidder; losers and evicted owners bid again.
    int* next_list = s.list(parity ^ 1);
    int* next_count = s.count() + (round + 1) % 3;
    unsigned long long* next_key = s.key(parity ^ 1);
    if (g.rank() == 0) s.count()[(round + 2) % 3] = 0;
    for_each_warp_uniform(g, bidders, [&](int k, bool in) {
      const int row = in ? list[k] : 0;
      append_warp(next_list, next_count,
                  in && static_cast<unsigned>(key[s.target()[row]]) != static_cast<unsigned>(~row),
                  row);
    });
    for_each_warp_uniform(g, m, [&](int j, bool in) {
      int evicted = -1;
      if (in) {
        next_key[j] = 0ull;
        const unsigned long long kv = key[j];
        if (kv != 0ull) {
          const int row = ~static_cast<int>(static_cast<unsigned>(kv));
          // The owner did not bid (it held a column), so it is not `row` nor any other winner.
          evicted = s.owner()[j];
          if (evicted >= 0) s.x()[evicted] = -1;
          s.owner()[j] = row;
          s.x()[row] = j;
          s.price()[j] = __uint_as_float(static_cast<unsigned>(kv >> 32));
        }
      }
      append_warp(next_list, next_count, evicted >= 0, evicted);
    });
    g.sync();
  }
}

// Reverse stage of a phase at `eps`, after the forward stage assigned every row: unassigned
// columns priced above lambda (the lowest assigned price) offer themselves to rows until none is
// left (each either wins a row, freeing that row's old column, or retires at lambda). Rows stay
// assigned and their values only fall, so eps-complementary slackness holds throughout. Returns
// false if the round cap was hit (the assignment is still complete; the gap decides).
template <class G>
__device__ bool reverse_stage(G g, const Prepared& pc, const State& s, float eps, float lambda,
                              int max_rounds, int* rounds_run) {
  const int n = pc.n, m = pc.m;
  if (g.rank() == 0) {  // every thread finished reading the counts before lambda's reduction
    s.count()[0] = 0;
    s.count()[1] = 0;
    s.count()[2] = 0;
  }
  for (int i = g.rank(); i < n; i += g.size()) {
    s.key(0)[i] = ~0ull;
    s.key(1)[i] = ~0ull;
  }
  g.sync();
  for_each_warp_uniform(g, m, [&](int j, bool in) {
    append_warp(s.list(0), s.count(), in && s.owner()[j] < 0 && s.price()[j] > lambda, j);
  });
  g.sync();
  for (int round = 0;; ++round) {
    const int bidders = load_volatile(s.count() + round % 3);
    if (bidders == 0 || round >= max_rounds) {
      *rounds_run += round;
      return bidders == 0;
    }
    const int parity = round & 1;
    const int* list = s.list(parity);
    unsigned long long* key = s.key(parity);

    // Offer, against the row values at the start of the round.
    for_each_bidder(
        g, list, bidders,
        [&](int col, int begin, int stride) { return scan_rows(pc, s, col, begin, stride); },
        [&](int col, const Best& b) { place_offer(pc, s, key, col, b, eps, lambda); });
    g.sync();

    // Resolve: each row takes its cheapest offer; the winning column takes the row at its
    // offered price and the row's old column is freed (a bidder if priced above lambda); a
    // losing column keeps its old price and offers again.
    int* next_list = s.list(parity ^ 1);
    int* next_count = s.count() + (round + 1) % 3;
    unsigned long long* next_key = s.key(parity ^ 1);
    if (g.rank() == 0) s.count()[(round + 2) % 3] = 0;
    for (int i = g.rank(); i < n; i += g.size()) next_key[i] = ~0ull;
    for_each_warp_uniform(g, bidders, [&](int k, bool in) {
      int next = -1;  // the column that bids next round, if any
      const int col = in ? list[k] : 0;
      const int row = in ? s.target()[col] : -1;  // -1: retired (or past the end)
      if (row >= 0) {
        if (static_cast<unsigned>(key[row]) != static_cast<unsigned>(col)) {
          next = col;
        } else {
          const int old = s.x()[row];
          s.owner()[old] = -1;
          s.owner()[col] = row;
          s.x()[row] = col;
          s.price()[col] = s.offer()[col];
          if (s.price()[old] > lambda) next = old;
        }
      }
      append_warp(next_list, next_count, next >= 0, next);
    });
    g.sync();
  }
}

// eps for the next phase, as in the CPU twin (next_eps in csrc/cpu/lap_auction.cpp, which says
// why). Divide by kEpsDivisor, or, unless most bids tied, jump to the measured gap / N (only the
// N rows carry eps slack) divided by kEpsDivisor^2 when M >= 2N (free columns: emulated pool
// 256 x 1024 in 113 rounds, 195 with a divisor of 7), by kEpsDivisor when the gap is far below
// its N eps bound.
__device__ __forceinline__ float next_eps(float eps, double gap, int n, int m, int64_t bids,
                                          int tied_bids, float eps_floor) {
  const double nd = static_cast<double>(n);
  const bool free_columns = m >= 2 * static_cast<int64_t>(n);
  const bool calm = 4 * static_cast<int64_t>(tied_bids) <= 3 * bids &&
                    (free_columns || gap * kEpsDivisor * kEpsDivisor <= nd * eps);
  if (!calm) return fmaxf(eps / kEpsDivisor, eps_floor);
  const float divisor = free_columns ? kEpsDivisor * kEpsDivisor : kEpsDivisor;
  return fmaxf(fminf(eps, static_cast<float>(gap / nd)) / divisor, eps_floor);
}

// How many entries equal their row's minimum, summed over the rows (each counted by a warp).
template <class G>
__device__ int64_t entries_at_row_minima(G g, const float* cost, int n, int m, double* partials) {
  const int lane = threadIdx.x % kWarpSize;
  int64_t at_minima = 0;  // this lane's part
  for (int i = g.warp(); i < n; i += g.warps()) {
    const float* row = cost + static_cast<int64_t>(i) * m;
    float row_min = INFINITY;
    for (int j = lane; j < m; j += kWarpSize) row_min = fminf(row_min, __ldg(row + j));
    row_min = warp_reduce(row_min, MinOp{});
    for (int j = lane; j < m; j += kWarpSize) at_minima += __ldg(row + j) == row_min;
  }
  return group_reduce(g, at_minima, SumOp{}, int64_t{0}, partials);
}

// Solves one problem with group g; writes row_to_col [N] and *status, and the bidding rounds
// it ran to rounds [2] (forward, reverse) unless that is nullptr (the CUDA kernels pass nullptr,
// so the counter compiles away there).
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

  for (int j = g.rank(); j < m; j += g.size()) s.price()[j] = 0.0f;
  g.sync();
  const float scale = range > 0.0f ? range : 1.0f;
  // On integer costs a phase at eps = 0.5/N ends with a gap <= 0.5 < 1, which proves the
  // optimum: eps never needs to go lower.
  const float eps_floor = fmaxf(scale * kEpsFloorScale,
                                integral == 1.0f ? 0.5f / static_cast<float>(n) : 0.0f);
  // Integer costs with few distinct values start at the floor, as in the CPU twin: coarse phases
  // only leave price steps that later phases bid away in eps-sized steps (emulated integers
  // 0..3 at 256 x 256: 755 rounds from range/4, 21 from the floor); with many distinct values
  // the floor would start a bidding war (integers 0..999: 14372 rounds against 1008). With
  // every finite cost equal (range 0) any eps-CS assignment at the floor is optimal.
  bool start_at_floor = range == 0.0f;
  if (integral == 1.0f && range > 0.0f) {
    start_at_floor =
        entries_at_row_minima(g, cost, n, m, partials) >= kFewValuesMultiplicity * int64_t{n};
  }
  float eps = start_at_floor ? eps_floor : fmaxf(scale / 4.0f, eps_floor);
  bool complete = true;
  int forward_rounds = 0, reverse_rounds = 0;
  for (int phase = 0; phase < kMaxPhases; ++phase) {
    int64_t phase_bids = 0;
    complete = forward_stage(g, pc, s, eps, max_rounds, &forward_rounds, &phase_bids);
    if (!complete) break;
    // Read here, not at next_eps: the grid syncs of the reductions between now and the next
    // forward stage, where thread 0 resets the counter, keep every thread's read before it.
    const int tied_bids = load_volatile(s.tied_bids());
    if (m > n) {
      // lambda: the lowest price of an assigned column.
      float lambda = INFINITY;
      for (int j = g.rank(); j < m; j += g.size())
        if (s.owner()[j] >= 0) lambda = fminf(lambda, s.price()[j]);
      lambda = group_reduce(g, lambda, MinOp{}, INFINITY, partials);
      reverse_stage(g, pc, s, eps, lambda, max_rounds, &reverse_rounds);
      // Level: unassigned columns at lambda (raising them keeps eps-CS), so min_j p_j = lambda.
      for (int j = g.rank(); j < m; j += g.size())
        if (s.owner()[j] < 0) s.price()[j] = lambda;
      g.sync();
    }
    // Duality gap for N <= M, in float64:
    //   primal - (sum_i min_j (c_ij + p_j) - sum_j p_j + (M - N) min_j p_j).
    double primal = 0.0, dual = 0.0;
    float pmin = INFINITY;
    const int lane = threadIdx.x % kWarpSize;
    for (int i = g.warp(); i < n; i += g.warps()) {
      const float* r = pc.row(i);
      float best = INFINITY;
      for (int j = lane; j < m; j += kWarpSize) best = fminf(best, pc.at(r, j) + s.price()[j]);
      best = warp_reduce(best, MinOp{});
      if (lane == 0) {
        dual += best;
        primal += pc.at(r, s.x()[i]);
      }
    }
    for (int j = g.rank(); j < m; j += g.size()) {
      dual -= s.price()[j];
      pmin = fminf(pmin, s.price()[j]);
    }
    primal = group_reduce(g, primal, SumOp{}, 0.0, partials);
    dual = group_reduce(g, dual, SumOp{}, 0.0, partials);
    pmin = group_reduce(g, pmin, MinOp{}, INFINITY, partials);
    // A common shift of the prices changes neither the gap (the (M - N) term absorbs it) nor the
    // bids; keeping them near zero keeps float32 steps resolvable and bids non-negative.
    for (int j = g.rank(); j < m; j += g.size()) s.price()[j] -= pmin;
    g.sync();

    const double gap = primal - dual - static_cast<double>(m - n) * pmin;
    const double total_cost = primal + static_cast<double>(n) * lo;
    double target = exact ? 0.0 : (tol > 0.0f ? static_cast<double>(tol) : 1e-6 * fabs(total_cost));
    // On integer costs a gap below 1 proves the optimum whatever the target (0.5: a margin for
    // the float32 row minima in the dual).
    if (integral == 1.0f) target = 0.5;
    if (gap <= target || eps <= eps_floor) break;
    eps = next_eps(eps, gap, n, m, phase_bids, tied_bids, eps_floor);
  }

  if (!complete) {
    // Round cap hit (never seen; a guard against a hang): finish with a valid assignment.
    if (g.rank() == 0) {
      int free_col = 0;
      for (int i = 0; i < n; ++i) {
        if (s.x()[i] >= 0) continue;
        while (s.owner()[free_col] >= 0) ++free_col;
        s.owner()[free_col] = i;
        s.x()[i] = free_col;
      }
    }
    g.sync();
  }

  int forbidden = 0;
  for (int i = g.rank(); i < n; i += g.size())
    forbidden |= __ldg(cost + static_cast<int64_t>(i) * m + s.x()[i]) == INFINITY;
  forbidden = group_reduce(g, forbidden, MaxOp{}, 0, partials);
  for (int i = g.rank(); i < n; i += g.size()) row_to_col[i] = forbidden ? -1 : s.x()[i];
  if (g.rank() == 0) *status = forbidden;
  if (rounds != nullptr && g.rank() == 0) {
    rounds[0] = forward_rounds;
    rounds[1] = reverse_rounds;
  }
  g.sync();  // state reusable by the next problem
}

}  // namespace immiscible::cuda
