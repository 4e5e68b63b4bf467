// Launch decisions of the CUDA auction as pure functions: the CUDA launcher
// (linear_assignment_cuda.cu) calls them, and the host emulation module exports them so Python
// tests can check them (tests/ops/test_cuda_launch_config.py). No CUDA header needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define IMMISCIBLE_HOST_DEVICE __host__ __device__
#else
#define IMMISCIBLE_HOST_DEVICE
#endif

namespace immiscible::cuda {

constexpr int kGridThreads = 512;
// Below this many columns one block per problem beats a grid: a grid barrier costs microseconds
// per bidding round, a block barrier tens of nanoseconds. To be tuned on a GPU (docs/GPU.md).
constexpr int64_t kGridMinColumns = 1024;
// Leaves room for the reduction scratch in static shared memory under the default 48 KB.
constexpr size_t kMaxDynamicSmem = 44 * 1024;

enum class Mode { kAuto = 0, kBlock = 1, kGrid = 2 };

// Bytes of the auction's per-problem State for M columns; carve_state (auction.cuh) lays the
// arrays out in these bytes, each 8-byte aligned.
IMMISCIBLE_HOST_DEVICE constexpr size_t state_bytes(int64_t m) {
  const int64_t m8 = (m + 1) / 2 * 2;  // keeps the following arrays 8-byte aligned
  return static_cast<size_t>(m * 8 * 2 + m8 * 4 * 7 + 16);
}

// Block mode: threads per block for M columns (a warp scans one row per bid, so a block has a
// warp per bidder it can serve at once; more threads only pay off with more columns).
constexpr int block_threads(int64_t m) { return m <= 128 ? 128 : (m <= 512 ? 256 : 512); }

// Block mode keeps the State in dynamic shared memory when it fits, else in a global workspace.
constexpr bool state_in_smem(int64_t m) { return state_bytes(m) <= kMaxDynamicSmem; }

// IMMISCIBLE_CUDA_AUCTION=block|grid forces a regime (benchmarks, tests); anything else is auto.
inline Mode parse_mode(const char* v) {
  if (v == nullptr) return Mode::kAuto;
  if (std::strcmp(v, "block") == 0) return Mode::kBlock;
  if (std::strcmp(v, "grid") == 0) return Mode::kGrid;
  return Mode::kAuto;
}

// Grid mode for a few large problems (one per 4 SMs at most), block mode otherwise; block mode
// whenever the device cannot launch cooperatively, even if grid mode was forced.
constexpr Mode choose_mode(Mode forced, int64_t m, int64_t problems, int sms, bool cooperative) {
  Mode mode = forced;
  if (mode == Mode::kAuto)
    mode = (m >= kGridMinColumns && problems * 4 <= sms) ? Mode::kGrid : Mode::kBlock;
  if (!cooperative) mode = Mode::kBlock;
  return mode;
}

// cudaError_t values, so that this header needs no CUDA include (linear_assignment_cuda.cu
// static_asserts them against the runtime's enum).
constexpr int kCudaErrorCooperativeLaunchTooLarge = 720;
constexpr int kCudaErrorNotSupported = 801;

// A cooperative launch the device refuses because the grid cannot be resident as a whole (MPS
// with an active-thread percentage, a partitioned GPU: fewer SMs or threads than the occupancy
// query assumed), or because it takes no cooperative launch at all, is retried in block mode
// (the same algorithm, one block per problem); any other error is an error.
constexpr bool grid_launch_falls_back(int error) {
  return error == kCudaErrorCooperativeLaunchTooLarge || error == kCudaErrorNotSupported;
}

// Grid mode: every block resident at once (the grid barrier requires it).
constexpr int grid_blocks(int blocks_per_sm, int sms) { return blocks_per_sm * sms; }

// Rounds per phase (per stage) before the guard against a hang fires: far above what any
// phase has needed.
constexpr int max_rounds(int64_t m) {
  const int64_t r = 64 * m + 100000;
  return static_cast<int>(r < INT32_MAX / 2 ? r : INT32_MAX / 2);
}

}  // namespace immiscible::cuda
