// The Python module behind `immiscible_ops._C_cuda`: importing it registers the CUDA kernels
// of the `immiscible` operators (STABLE_TORCH_LIBRARY_IMPL(immiscible, CUDA, ...) blocks).
// Importing it makes no CUDA call; `cuda_versions()` lets the loader compare the CUDA runtime
// linked into this module with the installed driver before any kernel runs.
#include <Python.h>
#include <cuda_runtime_api.h>

namespace {

// (runtime, driver) as CUDA encodes them (13000 = 13.0); driver is 0 when no driver is loadable.
PyObject* cuda_versions(PyObject*, PyObject*) {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  return Py_BuildValue("(ii)", CUDART_VERSION, driver);
}

// The architectures compiled to machine code (setup.py's IMMISCIBLE_CUDA_ARCHS); any other GPU
// JIT-compiles the embedded PTX, which needs a driver at least as new as CUDART_VERSION.
#ifndef IMMISCIBLE_SASS_ARCHS
#define IMMISCIBLE_SASS_ARCHS 80, 90
#endif
PyObject* sass_archs(PyObject*, PyObject*) {
  constexpr int archs[] = {IMMISCIBLE_SASS_ARCHS};
  constexpr Py_ssize_t count = sizeof(archs) / sizeof(archs[0]);
  PyObject* out = PyTuple_New(count);
  if (out == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < count; ++i) PyTuple_SetItem(out, i, PyLong_FromLong(archs[i]));
  return out;
}

PyMethodDef methods[] = {
    {"cuda_versions", cuda_versions, METH_NOARGS,
     "(runtime, driver) CUDA versions: the runtime linked in, the driver installed (0: none)."},
    {"sass_archs", sass_archs, METH_NOARGS,
     "The compute capabilities compiled to machine code, e.g. (80, 90)."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C_cuda", "immiscible_ops CUDA operators", -1, methods,
  };
  return PyModule_Create(&module_def);
}
}
