// Per-element math of the fused attack step, shared by the C++/OpenMP kernel
// (csrc/cpu/attack_step_cpu.cpp) and the CUDA kernel (csrc/cuda/attack_step_cuda.cu).
//
// One torch.optim.Adam step (no weight decay, no amsgrad) on the gradient u, or on its sign when
// `signed` (reference: i2f_fast/reference/attack_step.py), then the box projection:
//   m ← m + (1 − β₁)(u − m);   v ← β₂ v + (1 − β₂) u²
//   x ← x − step · m / (√v · (1/√bc₂) + eps),  step = lr / bc₁;   x ← min(max(x, lower), upper).
// The step size and bias corrections arrive as device tensors (read by the kernel, never by the
// host), so the step can be captured once in a CUDA graph and replayed.
#pragma once

#include <cmath>

#include "i2f_fast/cg_step.h"  // I2F_FAST_HD

namespace i2f_fast {

// Per-call constants of the element update (w1 = 1 − β₁ and w2 = 1 − β₂ are formed in double on
// the host, as torch.optim.Adam forms them from Python floats).
template <typename scalar_t>
struct AdamCoefficients {
  scalar_t w1, beta2, w2, eps;
  bool sign;
};

template <typename scalar_t>
I2F_FAST_HD void adam_element(scalar_t& x, scalar_t g, scalar_t& m, scalar_t& v, scalar_t step,
                              scalar_t inv_sqrt_bc2, const AdamCoefficients<scalar_t>& c) {
  const scalar_t u = c.sign ? static_cast<scalar_t>((g > scalar_t(0)) - (g < scalar_t(0))) : g;
  m = m + c.w1 * (u - m);
  v = v * c.beta2 + c.w2 * (u * u);
  x = x - (m * step) / (std::sqrt(v) * inv_sqrt_bc2 + c.eps);  // one division per element
}

// torch.clamp order: max with the lower bound first, then min with the upper bound.
template <typename scalar_t>
I2F_FAST_HD scalar_t box_element(scalar_t x, const scalar_t* lower, const scalar_t* upper, int64_t k) {
  if (lower != nullptr) x = x < lower[k] ? lower[k] : x;
  if (upper != nullptr) x = x > upper[k] ? upper[k] : x;
  return x;
}

}  // namespace i2f_fast
