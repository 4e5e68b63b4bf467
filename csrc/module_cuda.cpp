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

PyMethodDef methods[] = {
    {"cuda_versions", cuda_versions, METH_NOARGS,
     "(runtime, driver) CUDA versions: the runtime linked in, the driver installed (0: none)."},
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
