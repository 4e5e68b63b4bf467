// Keeps both modules loadable on glibc 2.28 (the manylinux_2_28 wheel tag) although they are
// built on a newer glibc (Debian 12: 2.36); glibc_cuda_runtime.cpp does the same for the CUDA
// runtime. `python .ci/check_abi.py` and `auditwheel repair --plat manylinux_2_28_x86_64` check it.
//
// gcc >= 11's libstdc++ headers read glibc's `__libc_single_threaded` (GLIBC_2.32) to skip
// atomic reference counting in single-threaded processes. A hidden definition here binds
// those reads inside the module; 0 means "maybe multi-threaded", so the atomics always run:
// always correct, never faster, and no GLIBC_2.32 import.
extern "C" {
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;
}
