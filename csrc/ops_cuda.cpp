// Registers the CUDA kernels (csrc/cuda/) with the dispatcher for CUDA tensors. The schemas are
// defined once, in Python (i2f_fast/_library.py).
#include <torch/library.h>

#include "i2f_fast/kernels.h"

TORCH_LIBRARY_IMPL(i2f_fast, CUDA, m) {
  m.impl("cg_step", &i2f_fast::cuda::cg_step);
  // the attack loop's fused ops
  m.impl("grad_match", &i2f_fast::cuda::grad_match);
  m.impl("tv", &i2f_fast::cuda::tv);
  m.impl("attack_step", &i2f_fast::cuda::attack_step);
  // the structured engine's kernels (ENGINE.md)
  m.impl("dual_act", &i2f_fast::cuda::dual_act);
  m.impl("ce_hvp", &i2f_fast::cuda::ce_hvp);
  m.impl("gram_apply", &i2f_fast::cuda::gram_apply);
}
