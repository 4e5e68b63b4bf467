// The Python module behind `immiscible_ops._C`. Importing it runs the static registrations of
// the operators (STABLE_TORCH_LIBRARY blocks); it has no Python functions of its own, so a bare
// limited-API module stub replaces pybind11.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "immiscible_ops CPU operators", -1, nullptr,
  };
  return PyModule_Create(&module_def);
}
}
