// Registers the C++/OpenMP kernels (csrc/cpu/) with the dispatcher for CPU tensors. The schemas
// are defined once, in Python (i2f_fast/_library.py).
#include <torch/library.h>

#include "i2f_fast/kernels.h"

TORCH_LIBRARY_IMPL(i2f_fast, CPU, m) { m.impl("cg_step", &i2f_fast::cpu::cg_step); }

// The attack loop's fused ops (issue 5), in their own block so that each op group merges cleanly.
TORCH_LIBRARY_IMPL(i2f_fast, CPU, m) {
  m.impl("grad_match", &i2f_fast::cpu::grad_match);
  m.impl("tv", &i2f_fast::cpu::tv);
  m.impl("attack_step", &i2f_fast::cpu::attack_step);
}
