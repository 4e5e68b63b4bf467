"""KNN noise: for each image draw k candidate Gaussian noises and keep the nearest (L2).

`knn_noise` is the operator immiscible::knn_noise (seeded Philox candidates, never stored): the
fused Triton kernel on CUDA (immiscible_ops/triton_knn.py, where the counter layout is), the
numpy Philox reference on any other device (reference.knn_noise_reference, bit-identical to the
kernel under the Triton interpreter).

Candidates drawn by the caller (`select_nearest`), and the CPU path of
`immiscible_noise(method="knn")` (`knn_noise_randn`: candidates from torch.randn), use the plain
torch recipe of kohya-ss and OneTrainer instead: distances are torch.linalg.vector_norm of the
flattened difference in a stated dtype, bit for bit what that recipe computes on the same
candidates. Philox in numpy costs ~150 ms for B*k*D = 4M normals on the reference machine, three
times all of the recipe's work, so the CPU default draws with torch's own generator.
"""

from typing import Optional, Union

import torch

from immiscible_ops._checks import (
    SEED_HIGH,
    check_candidates,
    check_knn,
    check_seed_tensor,
    seed_value,
)

try:
    import triton  # noqa: F401  (the fused kernel's dependency)

    HAS_TRITON = True
except ImportError:  # the CPU kernel needs no Triton
    HAS_TRITON = False


def draw_seed(generator: Optional[torch.Generator] = None,
              device: Union[str, torch.device] = "cpu") -> torch.Tensor:
    """int64 [1] Philox seed in [0, 2^63) drawn from `generator` (or the default one), on `device`.

    Stays on the device so that the CUDA path never synchronizes with the host."""
    gen_device = generator.device if generator is not None else torch.device(device)
    seed = torch.randint(0, SEED_HIGH, (1,), generator=generator, device=gen_device,
                         dtype=torch.int64)
    return seed.to(device, non_blocking=True)


def _seed_tensor(seed, device) -> torch.Tensor:
    if isinstance(seed, torch.Tensor):
        check_seed_tensor(seed)
        return seed.reshape(1).to(device)
    return torch.tensor([seed_value(seed)], dtype=torch.int64, device=device)


def knn_noise(x: torch.Tensor, k: int, *, generator: Optional[torch.Generator] = None,
              seed=None, return_index: bool = False):
    """x [B, ...] -> noise like x: per image the nearest (L2) of k standard-normal candidates
    (and the LongTensor [B] of chosen candidates if return_index). Seed from `seed` (int or
    int64 [1] tensor) or `generator`."""
    check_knn(x, k)
    seed = draw_seed(generator, x.device) if seed is None else _seed_tensor(seed, x.device)
    noise, index = torch.ops.immiscible.knn_noise(x, k, seed)
    return (noise, index) if return_index else noise


# ---------------------------------------------------------------------------------------------
# Candidates as tensors (the caller's, or torch.randn's): the plain torch recipe


def select_nearest(x: torch.Tensor, candidates: torch.Tensor, *,
                   distance_dtype: Optional[torch.dtype] = None, return_index: bool = False):
    """x [B, ...], candidates [B, k, ...] -> noise like x (x's shape and dtype): per image i the
    candidate j minimizing torch.linalg.vector_norm(c[i, j].flatten().to(dt) - x[i].flatten().to(dt)),
    dt = distance_dtype or torch.promote_types(x.dtype, candidates.dtype); ties (frequent in
    fp16/bf16, whose norms round coarsely) go to the lowest j, as torch.argmin; k = 1 takes the
    only candidate. With return_index also the LongTensor [B] of chosen j."""
    check_candidates(x, candidates, distance_dtype)
    b, k = candidates.shape[:2]
    if k == 1 or b == 0:
        index = torch.zeros(b, dtype=torch.long, device=x.device)
    else:
        dt = distance_dtype or torch.promote_types(x.dtype, candidates.dtype)
        # One call over [B, k, D], as the recipe makes it: torch's fp16 norm takes its generic
        # reduction, whose order could depend on the shape it is given.
        diff = x.detach().flatten(1).to(dt).unsqueeze(1) - candidates.detach().flatten(2).to(dt)
        index = torch.linalg.vector_norm(diff, dim=2).argmin(1)
    noise = candidates[torch.arange(b, device=x.device), index].to(x.dtype)
    return (noise, index) if return_index else noise


def knn_noise_randn(x: torch.Tensor, k: int, *, generator: Optional[torch.Generator] = None,
                    distance_dtype: Optional[torch.dtype] = None, return_index: bool = False):
    """x [B, ...] -> noise like x from candidates torch.randn((B, k, *x.shape[1:]), generator,
    x's device and dtype): the draws kohya-ss's and OneTrainer's recipe makes, then
    select_nearest. Memory O(B k D), as that recipe."""
    check_knn(x, k)
    candidates = torch.randn((x.shape[0], k, *x.shape[1:]), generator=generator, device=x.device,
                             dtype=x.dtype)
    return select_nearest(x, candidates, distance_dtype=distance_dtype, return_index=return_index)
