// CUDA kernel of immiscible::solve_batched: auction with epsilon-scaling (design: docs/GPU.md,
// device code: auction.cuh). One launch per call, no host synchronization: CUDA-graph capturable.
//
// Two regimes behind the one op:
//   block mode  one thread block per problem, state in shared memory when it fits
//               (many small problems, e.g. 256 problems of 256x256);
//   grid mode   a cooperative persistent grid per problem, problems in turn
//               (few large problems, e.g. one of 16384x16384).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <tuple>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include "cuda/auction.cuh"
#include "cuda/launch_config.h"
#include "stable_boxing.h"

namespace immiscible::cuda {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

#define IMMISCIBLE_CUDA_CHECK(expr)                                                        \
  do {                                                                                     \
    const cudaError_t err_ = (expr);                                                       \
    STD_TORCH_CHECK(err_ == cudaSuccess, "CUDA error in solve_batched: ", #expr, ": ", \
                    cudaGetErrorString(err_));                                             \
  } while (0)

// __launch_bounds__(512) lets ptxas hold both kernels at 64 registers (two 512-thread blocks per SM)
// and spill (sm_90 grid kernel: 224 bytes of spill stores); (512, 1) gives them up to 128
// registers and no spill, at one resident block per SM (half the grid in grid mode). Which wins
// is a GPU measurement (benchmarks/gpu_round.sh, stage "bounds"); setup.py builds the second with
// IMMISCIBLE_CUDA_MIN_BLOCKS=1. Figures per target: docs/GPU.md "Resources".
#if defined(IMMISCIBLE_AUCTION_MIN_BLOCKS) && IMMISCIBLE_AUCTION_MIN_BLOCKS > 0
#define IMMISCIBLE_AUCTION_BOUNDS(threads) __launch_bounds__(threads, IMMISCIBLE_AUCTION_MIN_BLOCKS)
#else
#define IMMISCIBLE_AUCTION_BOUNDS(threads) __launch_bounds__(threads)
#endif

__global__ void IMMISCIBLE_AUCTION_BOUNDS(512)
    auction_block_kernel(const float* __restrict__ cost,  // [P, N, M]
                         int n, int m, float tol, bool exact, int max_rounds,
                         unsigned char* workspace,  // [P, state_bytes(M)] unless in smem
                         bool state_in_smem,
                         int64_t* __restrict__ row_to_col,  // [P, N]
                         int32_t* __restrict__ status) {    // [P]
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t p = blockIdx.x;
  unsigned char* base = state_in_smem ? smem : workspace + p * state_bytes(m);
  const State s = carve_state(base, m);
  solve_problem(BlockGroup{}, cost + p * n * m, n, m, tol, exact, max_rounds, s, nullptr,
                row_to_col + p * n, status + p, nullptr);
}

__global__ void IMMISCIBLE_AUCTION_BOUNDS(kGridThreads)
    auction_grid_kernel(const float* __restrict__ cost,  // [P, N, M]
                        int problems, int n, int m, float tol, bool exact, int max_rounds,
                        unsigned char* workspace,  // [state_bytes(M)]
                        double* partials,          // [gridDim.x]
                        int64_t* __restrict__ row_to_col,  // [P, N]
                        int32_t* __restrict__ status) {    // [P]
  const State s = carve_state(workspace, m);
  for (int64_t p = 0; p < problems; ++p)
    solve_problem(GridGroup{}, cost + p * n * m, n, m, tol, exact, max_rounds, s, partials,
                  row_to_col + p * n, status + p, nullptr);
}

// What the launch needs to know about a device, queried once per device: these attribute and
// occupancy queries cost microseconds, and a B=1024 solve is budgeted at a fraction of a ms.
struct DeviceInfo {
  int sms = 0;
  int cooperative = 0;
  int grid_blocks_per_sm = 0;
};

DeviceInfo query_device(int device);  // defined after the kernels it measures

static_assert(kCudaErrorCooperativeLaunchTooLarge == cudaErrorCooperativeLaunchTooLarge);
static_assert(kCudaErrorNotSupported == cudaErrorNotSupported);

std::atomic<bool>& grid_refused(int device) {
  static std::atomic<bool> refused[64];
  return refused[device];
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    IMMISCIBLE_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) IMMISCIBLE_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// cost [P, N, M] (any floating dtype) -> (row_to_col [P, N] int64, status [P] int32)
std::tuple<Tensor, Tensor> solve_batched_cuda(Tensor cost, std::string solver, double tol) {
  STD_TORCH_CHECK(cost.dim() == 3, "cost must be [P, N, M]");
  STD_TORCH_CHECK(solver == "auto" || solver == "auction" || solver == "exact",
                  "solver: unknown solver '", solver, "' for CUDA");
  // "exact" is the same auction driven until the duality gap is zero or eps reaches the
  // float32 resolution of the costs (docs/GPU.md).
  const bool exact = solver == "exact";
  Tensor c = torch::stable::contiguous(torch::stable::to(cost, ScalarType::Float));
  const int64_t problems = c.size(0), n = c.size(1), m = c.size(2);
  STD_TORCH_CHECK(n <= m, "cost must have N <= M");
  // Bids pack the row into 32 bits; rows and columns are int on the device.
  STD_TORCH_CHECK(m < (int64_t{1} << 30), "cost: M must be below 2^30");
  STD_TORCH_CHECK(problems < (int64_t{1} << 31), "cost: too many problems");

  Tensor row_to_col = torch::stable::new_empty(c, {problems, n}, ScalarType::Long);
  Tensor status = torch::stable::new_empty(c, {problems}, ScalarType::Int);
  if (problems == 0) return {row_to_col, status};
  if (n == 0) {
    torch::stable::zero_(status);
    return {row_to_col, status};
  }

  const int device = c.get_device_index();
  DeviceGuard guard(device);
  void* stream_ptr = nullptr;
  STD_TORCH_CHECK(aoti_torch_get_current_cuda_stream(device, &stream_ptr) == AOTI_TORCH_SUCCESS,
                  "solve_batched: cannot get the current CUDA stream");
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const DeviceInfo info = query_device(device);
  const int sms = info.sms;

  const float tol_f = tol > 0.0 ? static_cast<float>(tol) : -1.0f;
  const int rounds_cap = max_rounds(m);
  const float* cost_ptr = c.const_data_ptr<float>();
  int64_t* out_ptr = row_to_col.mutable_data_ptr<int64_t>();
  int32_t* status_ptr = status.mutable_data_ptr<int32_t>();
  const int ni = static_cast<int>(n), mi = static_cast<int>(m);
  const int pi = static_cast<int>(problems);

  // A device that refused a cooperative grid once (grid_launch_falls_back) is not asked again.
  const bool cooperative = info.cooperative != 0 && info.grid_blocks_per_sm > 0 &&
                           !grid_refused(device).load(std::memory_order_relaxed);
  const Mode mode = choose_mode(parse_mode(std::getenv("IMMISCIBLE_CUDA_AUCTION")), m, problems,
                                sms, cooperative);

  auto launch_block = [&] {
    const int threads = block_threads(m);
    const size_t state = state_bytes(m);
    const bool in_smem = state_in_smem(m);
    unsigned char* ws = nullptr;
    Tensor workspace;
    if (!in_smem) {
      workspace = torch::stable::new_empty(c, {static_cast<int64_t>(state) * problems},
                                           ScalarType::Byte);
      ws = static_cast<unsigned char*>(workspace.mutable_data_ptr());
    }
    auction_block_kernel<<<pi, threads, in_smem ? state : 0, stream>>>(
        cost_ptr, ni, mi, tol_f, exact, rounds_cap, ws, in_smem, out_ptr, status_ptr);
    IMMISCIBLE_CUDA_CHECK(cudaGetLastError());
  };

  if (mode == Mode::kGrid) {
    // every block resident: required by the grid barrier
    const int blocks = grid_blocks(info.grid_blocks_per_sm, sms);
    const size_t state = state_bytes(m);
    Tensor workspace = torch::stable::new_empty(
        c, {static_cast<int64_t>(state + sizeof(double) * blocks)}, ScalarType::Byte);
    unsigned char* ws = static_cast<unsigned char*>(workspace.mutable_data_ptr());
    double* partials = reinterpret_cast<double*>(ws + state);
    void* args[] = {const_cast<float**>(&cost_ptr), const_cast<int*>(&pi),  const_cast<int*>(&ni),
                    const_cast<int*>(&mi),          const_cast<float*>(&tol_f),
                    const_cast<bool*>(&exact),      const_cast<int*>(&rounds_cap),
                    &ws,                            &partials,
                    &out_ptr,                       &status_ptr};
    const cudaError_t err = cudaLaunchCooperativeKernel(
        reinterpret_cast<void*>(auction_grid_kernel), dim3(blocks), dim3(kGridThreads), args, 0,
        stream);
    if (err != cudaSuccess) {
      STD_TORCH_CHECK(grid_launch_falls_back(err),
                      "CUDA error in solve_batched: cudaLaunchCooperativeKernel: ",
                      cudaGetErrorString(err));
      (void)cudaGetLastError();  // the refused launch's error is not sticky: clear it
      grid_refused(device).store(true, std::memory_order_relaxed);
      launch_block();
    }
  } else {
    launch_block();
  }
  // The workspace tensors die here; the caching allocator keeps their blocks for this stream
  // until the kernel has finished with them.
  return {row_to_col, status};
}

DeviceInfo query_device(int device) {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  static DeviceInfo info[kMaxDevices];
  STD_TORCH_CHECK(device >= 0 && device < kMaxDevices, "solve_batched: device index ", device);
  std::call_once(once[device], [device] {
    DeviceInfo& d = info[device];
    IMMISCIBLE_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device));
    IMMISCIBLE_CUDA_CHECK(
        cudaDeviceGetAttribute(&d.cooperative, cudaDevAttrCooperativeLaunch, device));
    IMMISCIBLE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &d.grid_blocks_per_sm, auction_grid_kernel, kGridThreads, 0));
  });
  return info[device];
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(immiscible, CUDA, m) {
  m.impl("solve_batched", IMMISCIBLE_BOX(&solve_batched_cuda));
}

}  // namespace immiscible::cuda
