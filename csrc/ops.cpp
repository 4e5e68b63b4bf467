// Schemas of every operator in the `immiscible` namespace. Kernels register per device:
// csrc/cpu/*_cpu.cpp (CPU), csrc/cuda/*_cuda.cu (CUDA), and immiscible_ops/ops.py for the
// device-independent entry points (validation, batching, composition) and fake kernels.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(immiscible, m) {
  // Public ops (see immiscible_ops/ops.py for their semantics).
  m.def("linear_assignment(Tensor cost, str solver=\"auto\", float? tol=None, "
        "bool validate=True) -> Tensor");
  m.def("pairwise_distance(Tensor x, Tensor y, str metric=\"l2\", "
        "str precision=\"fp32\") -> Tensor");
  m.def("assign(Tensor x, Tensor noise, str metric=\"l2\", str precision=\"fp16\", "
        "str solver=\"auto\", float? tol=None, Tensor? groups=None, bool validate=True) -> Tensor");
  // Per image of x [B, ...] the nearest (L2) of k Philox normal candidates drawn from seed
  // (int64 [1]): (noise like x, index [B] int64). Kernels: immiscible_ops/reference.py (any
  // device), immiscible_ops/triton_knn.py (CUDA).
  m.def("knn_noise(Tensor x, int k, Tensor seed) -> (Tensor, Tensor)");
  // Device kernel behind linear_assignment: cost [P, N, M] (N <= M, any floating dtype),
  // returns (row_to_col [P, N] int64, status [P] int32: 0 ok, 1 infeasible, 2 NaN in the cost,
  // 3 -inf in the cost); the rows of a problem with nonzero status are all -1.
  // tol <= 0 selects the solver's default.
  m.def("solve_batched(Tensor cost, str solver, float tol) -> (Tensor, Tensor)");
}
