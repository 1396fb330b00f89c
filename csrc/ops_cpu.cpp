// Registers the C++/OpenMP kernels (csrc/cpu/) with the dispatcher for CPU tensors. The schemas
// are defined once, in Python (i2f_fast/_library.py).
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "i2f_fast/kernels.h"

TORCH_LIBRARY_IMPL(i2f_fast, CPU, m) {
  m.impl("cg_step", &i2f_fast::cpu::cg_step);
  // the attack loop's fused ops
  m.impl("grad_match", &i2f_fast::cpu::grad_match);
  m.impl("tv", &i2f_fast::cpu::tv);
  m.impl("attack_step", &i2f_fast::cpu::attack_step);
  // the structured engine's kernels (ENGINE.md)
  m.impl("dual_act", &i2f_fast::cpu::dual_act);
  m.impl("ce_hvp", &i2f_fast::cpu::ce_hvp);
  m.impl("gram_apply", &i2f_fast::cpu::gram_apply);
}

// The engine's kernels are not differentiable (the engine calls them on detached tensors):
// PyTorch's not-implemented autograd kernel lets them run on tensors that require grad and raises
// on backward. Registered here, in C++, because a Python autograd kernel costs ~2.5 µs per call
// (benchmarks/bench_engine_kernels.py: ce_hvp at N = 1, C = 10 is ~10 µs in all); without the
// extension, i2f_fast/ops registers a Python one that raises instead.
TORCH_LIBRARY_IMPL(i2f_fast, Autograd, m) {
  m.impl("dual_act", torch::autograd::autogradNotImplementedFallback());
  m.impl("ce_hvp", torch::autograd::autogradNotImplementedFallback());
  m.impl("gram_apply", torch::autograd::autogradNotImplementedFallback());
}
