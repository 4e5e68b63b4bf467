// Host launcher of the emulated CUDA auction (see auction_host.h). The kernel bodies below
// mirror auction_block_kernel and auction_grid_kernel of csrc/cuda/linear_assignment_cuda.cu.
#include "host_emulation/cuda_shim.h"  // must precede auction.cuh

#include "host_emulation/auction_host.h"

#include <thread>

#include "cuda/auction.cuh"
#include "cuda/launch_config.h"

namespace immiscible::host {
namespace {

using cuda::BlockGroup;
using cuda::GridGroup;

void block_kernel(const float* cost, int n, int m, float tol, bool exact, int max_rounds,
                  unsigned char* workspace, bool state_in_smem, unsigned char* smem,
                  int64_t* row_to_col, int32_t* status, int32_t* rounds) {
  const int64_t p = blockIdx.x;
  unsigned char* base = state_in_smem ? smem : workspace + p * cuda::state_bytes(m);
  const cuda::State s = cuda::carve_state(base, m);
  cuda::solve_problem(BlockGroup{}, cost + p * n * m, n, m, tol, exact, max_rounds, s, nullptr,
                      row_to_col + p * n, status + p, rounds ? rounds + 2 * p : nullptr);
}

void grid_kernel(const float* cost, int problems, int n, int m, float tol, bool exact,
                 int max_rounds, unsigned char* workspace, double* partials, int64_t* row_to_col,
                 int32_t* status, int32_t* rounds) {
  const cuda::State s = cuda::carve_state(workspace, m);
  for (int64_t p = 0; p < problems; ++p)
    cuda::solve_problem(GridGroup{}, cost + p * n * m, n, m, tol, exact, max_rounds, s, partials,
                        row_to_col + p * n, status + p, rounds ? rounds + 2 * p : nullptr);
}

// Runs body() on blocks x threads std::threads, block indices first_block.., with the shim's
// thread-local CUDA built-ins and per-block / per-grid barriers set up.
template <class Body>
void launch(int first_block, int blocks, int grid_dim, int threads, Grid* grid, const Body& body) {
  std::vector<std::unique_ptr<Block>> block_state;
  for (int b = 0; b < blocks; ++b) block_state.push_back(std::make_unique<Block>(threads));
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(blocks) * threads);
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, b, t] {
        threadIdx = {static_cast<unsigned>(t), 0, 0};
        blockIdx = {static_cast<unsigned>(first_block + b), 0, 0};
        blockDim = {static_cast<unsigned>(threads), 1, 1};
        gridDim = {static_cast<unsigned>(grid_dim), 1, 1};
        current_block = block_state[b].get();
        current_grid = grid;
        shuffle_parity = 0;
        body();
      });
    }
  }
  for (auto& w : workers) w.join();
}

}  // namespace
}  // namespace immiscible::host

extern "C" int immiscible_auction_on_host(const float* cost, int64_t problems, int64_t n, int64_t m,
                                          int grid, int threads, int blocks, float tol, int exact,
                                          int64_t* row_to_col, int32_t* status, int32_t* rounds) {
  using namespace immiscible;
  if (problems < 0 || n < 0 || m < n || m >= (int64_t{1} << 30) || problems >= (int64_t{1} << 31))
    return -1;
  if (threads < 32 || threads > 1024 || threads % 32 != 0 || blocks < 1) return -1;
  if (problems == 0) return 0;
  if (n == 0) {  // as the CUDA launcher: nothing to launch
    for (int64_t p = 0; p < problems; ++p) status[p] = 0;
    if (rounds != nullptr)
      for (int64_t p = 0; p < 2 * problems; ++p) rounds[p] = 0;
    return 0;
  }
  const float tol_f = tol > 0.0f ? tol : -1.0f;
  const int ni = static_cast<int>(n), mi = static_cast<int>(m), pi = static_cast<int>(problems);
  const int rounds_cap = cuda::max_rounds(m);
  const size_t state = cuda::state_bytes(m);
  if (grid) {
    std::vector<std::uint64_t> workspace((state + 7) / 8);
    std::vector<double> partials(blocks);
    host::Grid grid_state(blocks * threads);
    auto* ws = reinterpret_cast<unsigned char*>(workspace.data());
    host::launch(0, blocks, blocks, threads, &grid_state, [&] {
      host::grid_kernel(cost, pi, ni, mi, tol_f, exact != 0, rounds_cap, ws, partials.data(),
                        row_to_col, status, rounds);
    });
    return 0;
  }
  // Block mode: one block per problem; `blocks` of them run at once, as resident blocks would.
  const bool in_smem = cuda::state_in_smem(m);
  std::vector<std::uint64_t> workspace(in_smem ? 0 : (state * problems + 7) / 8);
  auto* ws = reinterpret_cast<unsigned char*>(workspace.data());
  for (int first = 0; first < pi; first += blocks) {
    const int wave = std::min(blocks, pi - first);
    // Dynamic shared memory: one buffer per resident block.
    std::vector<std::vector<std::uint64_t>> smem(wave);
    if (in_smem)
      for (auto& buffer : smem) buffer.resize((state + 7) / 8);
    host::launch(first, wave, pi, threads, nullptr, [&] {
      unsigned char* own = in_smem ? reinterpret_cast<unsigned char*>(
                                         smem[blockIdx.x - first].data())
                                   : nullptr;
      host::block_kernel(cost, ni, mi, tol_f, exact != 0, rounds_cap, ws, in_smem, own,
                         row_to_col, status, rounds);
    });
  }
  return 0;
}

extern "C" int64_t immiscible_launch_state_bytes(int64_t m) {
  return static_cast<int64_t>(immiscible::cuda::state_bytes(m));
}

extern "C" int64_t immiscible_launch_state_layout_end(int64_t m) {
  std::vector<std::uint64_t> buffer((immiscible::cuda::state_bytes(m) + 7) / 8 + 1);
  auto* base = reinterpret_cast<unsigned char*>(buffer.data());
  const auto s = immiscible::cuda::carve_state(base, static_cast<int>(m));
  return reinterpret_cast<unsigned char*>(s.count() + 3) - base;
}

extern "C" int immiscible_launch_block_threads(int64_t m) { return immiscible::cuda::block_threads(m); }

extern "C" int immiscible_launch_state_in_smem(int64_t m) { return immiscible::cuda::state_in_smem(m); }

extern "C" int immiscible_launch_parse_mode(const char* value) {
  return static_cast<int>(immiscible::cuda::parse_mode(value));
}

extern "C" int immiscible_launch_choose_mode(int forced, int64_t m, int64_t problems, int sms,
                                             int cooperative) {
  return static_cast<int>(immiscible::cuda::choose_mode(static_cast<immiscible::cuda::Mode>(forced),
                                                        m, problems, sms, cooperative != 0));
}

extern "C" int immiscible_launch_grid_blocks(int blocks_per_sm, int sms) {
  return immiscible::cuda::grid_blocks(blocks_per_sm, sms);
}

extern "C" int immiscible_launch_max_rounds(int64_t m) { return immiscible::cuda::max_rounds(m); }

extern "C" int immiscible_launch_grid_falls_back(int error) {
  return immiscible::cuda::grid_launch_falls_back(error);
}
