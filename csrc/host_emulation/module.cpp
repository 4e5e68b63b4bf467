// immiscible_ops._auction_host: a Python module only so that setup.py builds and installs the
// library; immiscible_ops/testing.py calls its extern "C" functions through ctypes.
#include <Python.h>

static PyModuleDef auction_host_module = {PyModuleDef_HEAD_INIT, "_auction_host",
                                          "The CUDA auction emulated on the host (ctypes entry points).",
                                          -1, nullptr};

PyMODINIT_FUNC PyInit__auction_host(void) { return PyModule_Create(&auction_host_module); }
