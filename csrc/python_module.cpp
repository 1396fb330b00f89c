// The Python module entry point of one extension (i2f_fast._C or i2f_fast._C_cuda). Importing it
// loads the shared library, whose static TORCH_LIBRARY_IMPL blocks register the kernels; the
// module itself only carries build facts that `i2f-fast env` prints. Compiled once per extension
// with I2F_FAST_MODULE set to the module's name.
#include <Python.h>

#ifndef I2F_FAST_MODULE
#error "compile with -DI2F_FAST_MODULE=<module name>"
#endif

#define I2F_FAST_STR2(x) #x
#define I2F_FAST_STR(x) I2F_FAST_STR2(x)
#define I2F_FAST_CAT2(a, b) a##b
#define I2F_FAST_CAT(a, b) I2F_FAST_CAT2(a, b)

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, I2F_FAST_STR(I2F_FAST_MODULE),
                                        "i2f_fast compiled kernels (registered with torch.ops.i2f_fast)", -1,
                                        nullptr};

PyMODINIT_FUNC I2F_FAST_CAT(PyInit_, I2F_FAST_MODULE)(void) {
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef _OPENMP
  PyModule_AddIntConstant(m, "openmp", _OPENMP);
#else
  PyModule_AddIntConstant(m, "openmp", 0);
#endif
  return m;
}
