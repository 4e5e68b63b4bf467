// The CUDA auction (csrc/cuda/auction.cuh) launched on the host through the shim: the two
// kernels of csrc/cuda/linear_assignment_cuda.cu, with every GPU thread a std::thread.
// Used by the Python module immiscible_ops._auction_host and by the TSan driver.
#pragma once

#include <cstdint>

// Visible despite -fvisibility=hidden: ctypes looks these up by name.
#define IMMISCIBLE_EXPORT __attribute__((visibility("default")))

extern "C" {

// cost [P, N, M] float32 contiguous, N <= M -> row_to_col [P, N], status [P], rounds [P, 2]
// (forward, reverse bidding rounds; may be null). grid: 0 block mode (one block of `threads`
// per problem, `blocks` of them resident at once), 1 grid mode (`blocks` blocks of `threads`
// solving one problem at a time). tol <= 0: default tolerance. Returns 0, or -1 on bad arguments.
IMMISCIBLE_EXPORT int immiscible_auction_on_host(const float* cost, int64_t problems, int64_t n, int64_t m, int grid,
                               int threads, int blocks, float tol, int exact, int64_t* row_to_col,
                               int32_t* status, int32_t* rounds);

// The launcher's decisions (csrc/cuda/launch_config.h), exported for tests.
IMMISCIBLE_EXPORT int64_t immiscible_launch_state_bytes(int64_t m);
IMMISCIBLE_EXPORT int64_t immiscible_launch_state_layout_end(int64_t m);  // bytes carve_state actually uses
IMMISCIBLE_EXPORT int immiscible_launch_block_threads(int64_t m);
IMMISCIBLE_EXPORT int immiscible_launch_state_in_smem(int64_t m);
IMMISCIBLE_EXPORT int immiscible_launch_parse_mode(const char* value);
IMMISCIBLE_EXPORT int immiscible_launch_choose_mode(int forced, int64_t m, int64_t problems, int sms, int cooperative);
IMMISCIBLE_EXPORT int immiscible_launch_grid_blocks(int blocks_per_sm, int sms);
IMMISCIBLE_EXPORT int immiscible_launch_max_rounds(int64_t m);
IMMISCIBLE_EXPORT int immiscible_launch_grid_falls_back(int error);
}
