// Per-row and per-element math of the fused gradient-matching op, shared by the C++/OpenMP kernel
// (csrc/cpu/grad_match_cpu.cpp) and the CUDA kernel (csrc/cuda/grad_match_cuda.cu).
//
// R trial gradients g'_r (rows of a flat (R, P) buffer), one target g (P,), optional per-element
// weights w (P,) (reference: i2f_fast/reference/grad_match.py):
//   cosine: loss_r = 1 − ⟨g',g⟩_w / (‖g'‖_w ‖g‖_w),
//           ∂loss_r/∂g' = −scale · (w g − ratio · w g'),  scale = 1/(‖g'‖_w ‖g‖_w),  ratio = ⟨g',g⟩_w/‖g'‖²_w;
//           a zero g'_r or a zero g leaves the cosine undefined: loss 1, gradient 0 (no NaN).
//   l2:     loss_r = Σ w (g' − g)²,  ∂loss_r/∂g' = 2 w (g' − g).
// The cosine needs three row sums first (pass 1, accumulated in double), then one sweep writes
// the gradient (pass 2); l2 needs a single sweep that writes the gradient and sums the loss.
#pragma once

#include <cmath>

#include "i2f_fast/cg_step.h"  // I2F_FAST_HD

namespace i2f_fast {

enum class MatchKind : int { kCosine = 0, kL2 = 1 };

// Pass-1 row sums of the cosine, in double: ⟨g',g⟩_w, ‖g'‖²_w, ‖g‖²_w.
struct GradMatchSums {
  double dot;
  double trial_sq;
  double target_sq;
};

// What pass 2 does to a cosine row: grad = −scale · (w g − ratio · w g').
struct GradMatchPlan {
  double loss;
  double scale;
  double ratio;
};

I2F_FAST_HD GradMatchPlan grad_match_cosine_plan(const GradMatchSums& s) {
  if (!(s.trial_sq > 0.0) || !(s.target_sq > 0.0)) return {1.0, 0.0, 0.0};  // undefined cosine
  const double trial_norm = sqrt(s.trial_sq);
  const double scale = 1.0 / (trial_norm * sqrt(s.target_sq));
  return {1.0 - s.dot * scale, scale, s.dot / s.trial_sq};
}

// Pass-2 element of a cosine row: ∂loss/∂g' = w ⊙ (c_target · g + c_trial · g'), with the row's
// c_target = −scale and c_trial = scale · ratio formed once per row in scalar_t.
template <typename scalar_t>
I2F_FAST_HD scalar_t grad_match_cosine_grad(scalar_t trial, scalar_t target, scalar_t w, scalar_t c_target,
                                            scalar_t c_trial) {
  return w * (c_target * target + c_trial * trial);
}

}  // namespace i2f_fast
