"""immiscible_ops: fast noise assignment for Immiscible Diffusion.

    noise = immiscible_ops.immiscible_noise(latents)   # instead of torch.randn_like(latents)

Operators (also as torch.ops.immiscible.*): linear_assignment, pairwise_distance, assign, knn_noise.
scipy's contract: linear_sum_assignment. torchcfm's OT sampler: immiscible_ops.integrations.torchcfm;
C2OT's: immiscible_ops.integrations.c2ot. What a coupling did: coupling_stats.
"""

from immiscible_ops._loading import load_extensions

HAS_CUDA_KERNELS = load_extensions()

from immiscible_ops import ops as _ops  # noqa: E402, F401  (registers the Python kernels)
from immiscible_ops.knn import knn_noise  # noqa: E402
from immiscible_ops.noise import immiscible_noise  # noqa: E402
from immiscible_ops.ops import assign, linear_assignment, pairwise_distance  # noqa: E402
from immiscible_ops.scipy_compat import linear_sum_assignment  # noqa: E402
from immiscible_ops.stats import coupling_stats  # noqa: E402

try:  # registers the Triton kernels as the CUDA implementations of pairwise_distance, knn_noise
    from immiscible_ops import triton_distance as _triton_distance  # noqa: E402, F401
    from immiscible_ops import triton_knn as _triton_knn  # noqa: E402, F401
except ImportError:  # no triton: CUDA tensors use the reference kernels instead
    _triton_distance = _triton_knn = None


def __getattr__(name):
    # `immiscible_ops.testing` (it opens the host-emulation library) and
    # `immiscible_ops.integrations` without an import of their own, loaded on first use only.
    if name in ("testing", "integrations"):
        import importlib

        return importlib.import_module(f"immiscible_ops.{name}")
    raise AttributeError(f"module 'immiscible_ops' has no attribute {name!r}")


__all__ = ["assign", "coupling_stats", "immiscible_noise", "knn_noise", "linear_assignment",
           "linear_sum_assignment", "pairwise_distance", "HAS_CUDA_KERNELS"]
__version__ = "0.1.0"
