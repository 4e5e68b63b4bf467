"""Loads the compiled operator modules: the C++ one always, the CUDA one when torch has CUDA."""

import importlib
import warnings

import torch


def load_extensions() -> bool:
    """Imports `_C` (required) and `_C_cuda` (when torch is a CUDA build); True if CUDA loaded."""
    importlib.import_module("immiscible_ops._C")
    if torch.version.cuda is None:
        return False
    try:
        importlib.import_module("immiscible_ops._C_cuda")
    except ImportError as error:
        warnings.warn(
            f"immiscible_ops: CUDA kernels unavailable ({error}); CUDA tensors will fail. "
            "Rebuild with nvcc on PATH or CUDA_HOME set.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True
