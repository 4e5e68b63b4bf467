// Host shim: the CUDA features csrc/cuda/auction.cuh uses, emulated in plain C++20 so that the
// very same kernel source runs on the CPU. Every emulated GPU thread is one std::thread, so the
// interleavings between threads, warps and blocks are real (and visible to ThreadSanitizer):
//   threadIdx/blockIdx/blockDim/gridDim  thread-local values set by the launcher;
//   __syncthreads, grid sync             std::barrier per block / per grid;
//   __shfl_xor_sync, __shfl_sync,        a per-warp exchange buffer between warp barriers;
//   __ballot_sync
//   atomicMax/Min (64-bit), atomicAdd    std::atomic_ref;
//   __shared__ scratch in functions      per-block slots (IMMISCIBLE_BLOCK_SHARED).
// What this cannot show (GPU memory model, warp scheduling, timing): docs/GPU.md.
#pragma once

#define IMMISCIBLE_HOST_EMULATION 1

#include <math.h>

#include <array>
#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#define __device__
#define __host__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace immiscible::host {

constexpr int kWarpSize = 32;
constexpr int kSharedSlots = 8;
constexpr int kSharedSlotBytes = 1024;

struct Warp {
  Warp() : sync(kWarpSize) {}
  std::barrier<> sync;
  // Two buffers used alternately: a lane's write to buffer b at shuffle k+2 comes after the
  // barrier of shuffle k+1, which every lane reaches only after its read of b at shuffle k.
  std::uint64_t exchange[2][kWarpSize];
};

struct Block {
  explicit Block(int threads) : sync(threads), warps(threads / kWarpSize) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  std::barrier<> sync;
  std::vector<std::unique_ptr<Warp>> warps;
  alignas(16) unsigned char shared_slots[kSharedSlots][kSharedSlotBytes];
};

struct Grid {
  explicit Grid(int threads) : sync(threads) {}
  std::barrier<> sync;
};

inline thread_local Block* current_block = nullptr;
inline thread_local Grid* current_grid = nullptr;
inline thread_local unsigned shuffle_parity = 0;

inline std::atomic<int> next_shared_slot{0};

// Per-block storage for one IMMISCIBLE_BLOCK_SHARED declaration (one slot per instantiation).
template <class T, int Count, int Site>
T* block_shared() {
  static_assert(sizeof(T) * Count <= kSharedSlotBytes, "raise kSharedSlotBytes");
  static const int slot = next_shared_slot.fetch_add(1);
  if (slot >= kSharedSlots) std::abort();  // raise kSharedSlots
  return reinterpret_cast<T*>(current_block->shared_slots[slot]);
}

}  // namespace immiscible::host

inline void __syncthreads() { immiscible::host::current_block->sync.arrive_and_wait(); }

namespace cooperative_groups {
struct grid_group {
  void sync() const { immiscible::host::current_grid->sync.arrive_and_wait(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// All 32 lanes of the warp must call it together (the kernel only shuffles in converged code).
template <class T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(std::uint64_t));
  using namespace immiscible::host;
  Warp& w = *current_block->warps[threadIdx.x / kWarpSize];
  const unsigned lane = threadIdx.x % kWarpSize;
  std::uint64_t* buffer = w.exchange[shuffle_parity];
  shuffle_parity ^= 1u;
  std::memcpy(&buffer[lane], &v, sizeof(T));
  w.sync.arrive_and_wait();
  T out;
  std::memcpy(&out, &buffer[lane ^ static_cast<unsigned>(lane_mask)], sizeof(T));
  return out;
}

// Lane `src`'s value for every lane; all 32 lanes call it together, as __shfl_xor_sync.
template <class T>
inline T __shfl_sync(unsigned /*mask*/, T v, int src) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(std::uint64_t));
  using namespace immiscible::host;
  Warp& w = *current_block->warps[threadIdx.x / kWarpSize];
  const unsigned lane = threadIdx.x % kWarpSize;
  std::uint64_t* buffer = w.exchange[shuffle_parity];
  shuffle_parity ^= 1u;
  std::memcpy(&buffer[lane], &v, sizeof(T));
  w.sync.arrive_and_wait();
  T out;
  std::memcpy(&out, &buffer[static_cast<unsigned>(src) % kWarpSize], sizeof(T));
  return out;
}

// Bit i set where lane i's predicate is true; all 32 lanes call it together.
inline unsigned __ballot_sync(unsigned /*mask*/, bool predicate) {
  using namespace immiscible::host;
  Warp& w = *current_block->warps[threadIdx.x / kWarpSize];
  const unsigned lane = threadIdx.x % kWarpSize;
  std::uint64_t* buffer = w.exchange[shuffle_parity];
  shuffle_parity ^= 1u;
  buffer[lane] = predicate ? 1u : 0u;
  w.sync.arrive_and_wait();
  unsigned ballot = 0;
  for (int i = 0; i < kWarpSize; ++i) ballot |= static_cast<unsigned>(buffer[i] != 0) << i;
  return ballot;
}

inline int __popc(unsigned v) { return std::popcount(v); }
inline int __ffs(int v) { return v == 0 ? 0 : std::countr_zero(static_cast<unsigned>(v)) + 1; }

inline unsigned long long atomicMax(unsigned long long* address, unsigned long long value) {
  std::atomic_ref<unsigned long long> a(*address);
  unsigned long long old = a.load(std::memory_order_relaxed);
  while (old < value && !a.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
  return old;
}

inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  std::atomic_ref<unsigned long long> a(*address);
  unsigned long long old = a.load(std::memory_order_relaxed);
  while (old > value && !a.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
  return old;
}

inline int atomicAdd(int* address, int value) {
  return std::atomic_ref<int>(*address).fetch_add(value, std::memory_order_relaxed);
}
