// Registers the C++/OpenMP kernels (csrc/cpu/) with the dispatcher for CPU tensors. The schemas
// are defined once, in Python (i2f_fast/_library.py).
#include <torch/library.h>

#include "i2f_fast/kernels.h"

TORCH_LIBRARY_IMPL(i2f_fast, CPU, m) { m.impl("cg_step", &i2f_fast::cpu::cg_step); }

// The structured engine's kernels (ENGINE.md).
TORCH_LIBRARY_IMPL(i2f_fast, CPU, m) {
  m.impl("dual_act", &i2f_fast::cpu::dual_act);
  m.impl("ce_hvp", &i2f_fast::cpu::ce_hvp);
  m.impl("gram_apply", &i2f_fast::cpu::gram_apply);
}
