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
        "str solver=\"auto\", float? tol=None, Tensor? groups=None, bool validate=True, "
        "Tensor? conditions=None, float? condition_weight=None, float? condition_target_r=None, "
        "str condition_metric=\"cosine\") -> Tensor");
  // Per image of x [B, ...] the nearest (L2) of k Philox normal candidates drawn from seed
  // (int64 [1]): (noise like x, index [B] int64). Kernels: immiscible_ops/reference.py (any
  // device), immiscible_ops/triton_knn.py (CUDA).
  m.def("knn_noise(Tensor x, int k, Tensor seed) -> (Tensor, Tensor)");
  // Device kernel behind linear_assignment: cost [P, N, M] (N <= M, any floating dtype),
  // returns (row_to_col [P, N] int64, status [P] int32: 0 ok, 1 infeasible, 2 NaN in the cost,
  // 3 -inf in the cost); the rows of a problem with nonzero status are all -1.
  // tol <= 0 selects the solver's default.
  m.def("solve_batched(Tensor cost, str solver, float tol) -> (Tensor, Tensor)");
  // CPU pieces of the certified exact path (csrc/cpu/lap_sparse.h), for the "certified" solver
  // on any device and for tests: the sparse solver on candidate lists, the certificate alone,
  // and the dense path with its knobs exposed.
  m.def("_sparse_assignment(Tensor row_start, Tensor cols, Tensor costs, int m, Tensor? x0, "
        "Tensor? v0) -> (Tensor, Tensor)");
  m.def("_certify(Tensor cost, Tensor row_to_col, Tensor v, float tol) -> (Tensor, Tensor)");
  m.def("_certified_solve(Tensor cost, int row_candidates, int col_candidates, int max_rounds, "
        "bool force) -> (Tensor, Tensor)");
}
