from immiscible_ops._loading import load_extensions
HAS_CUDA_KERNELS = load_extensions()
