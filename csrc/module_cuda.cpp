// The Python module behind `immiscible_ops._C_cuda`: importing it registers the CUDA kernels
// of the `immiscible` operators (STABLE_TORCH_LIBRARY_IMPL(immiscible, CUDA, ...) blocks).
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C_cuda", "immiscible_ops CUDA operators", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
