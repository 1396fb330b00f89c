// Per-row and per-element math of the fused batched CG step, shared by the C++/OpenMP kernel
// (csrc/cpu/cg_step_cpu.cpp) and the CUDA kernel (csrc/cuda/cg_step_cuda.cu).
//
// One CG iteration per row b (reference: i2f_fast/reference/cg_step.py):
//   pAp = p·Ap;  breakdown if pAp <= 0 or non-finite (row frozen);
//   α = rr/pAp;  x += αp;  r' = r − αAp;  rr' = r'·r';  β = rr'/rr;  p = r' + βp.
//
// Two passes over memory instead of three. Pass 1 reads p, Ap and r once and accumulates, in
// double, the four row sums pAp, r·Ap, Ap·Ap and r·r. They give rr' before r' exists:
//   rr' = r·r − 2α r·Ap + α² Ap·Ap,
// so pass 2 can update x, r and p element by element (each array read and written once) while
// it also accumulates the exact r'·r' that the op returns. The closed form loses relative
// accuracy when rr' ≪ r·r (cancellation); a row whose predicted rr' falls below
// kExactBetaRatio · r·r (or is not finite) instead takes β from the exact r'·r' in a third pass
// over p alone. In double accumulation the closed form's relative error is then below ~1e-12.
#pragma once

#include <cstdint>

#include "i2f_fast/host_device.h"

namespace i2f_fast {

// True for finite values (NaN and ±inf give NaN on subtraction); the same on host and device.
I2F_FAST_HD bool is_finite(double v) { return v - v == 0.0; }

// Rows whose predicted r'·r' is below this fraction of r·r get β from the exact sum (third pass).
constexpr double kExactBetaRatio = 1e-4;

// The four row sums of pass 1, accumulated in double.
struct CgRowSums {
  double pAp;
  double rAp;
  double ApAp;
  double rr;
};

// What pass 2 does to a row.
struct CgRowPlan {
  double alpha;     // step length (0 for rows that do not step)
  double beta;      // direction update (valid only when !exact_beta)
  bool step;        // the row takes a step
  bool exact_beta;  // β must come from the exact r'·r' (pass 3 updates p)
};

I2F_FAST_HD CgRowPlan cg_row_plan(bool active, double rr_in, const CgRowSums& s) {
  CgRowPlan plan{0.0, 0.0, false, false};
  if (!active || !is_finite(s.pAp) || !(s.pAp > 0.0)) return plan;
  plan.step = true;
  plan.alpha = rr_in / s.pAp;
  const double predicted = s.rr - 2.0 * plan.alpha * s.rAp + plan.alpha * plan.alpha * s.ApAp;
  if (!is_finite(predicted) || !(predicted > kExactBetaRatio * s.rr)) {
    plan.exact_beta = true;
  } else {
    plan.beta = rr_in > 0.0 ? predicted / rr_in : 0.0;
  }
  return plan;
}

// β from the exact new residual norm (pass 3 rows).
I2F_FAST_HD double cg_exact_beta(double rr_in, double rr_new) {
  return rr_in > 0.0 ? rr_new / rr_in : 0.0;
}

// Pass-2 update of one element; returns r' (the caller accumulates r'²).
template <typename scalar_t>
I2F_FAST_HD scalar_t cg_update_element(scalar_t& x, scalar_t& r, scalar_t& p, scalar_t Ap, scalar_t alpha,
                                       scalar_t beta, bool update_p) {
  x += alpha * p;
  const scalar_t r_new = r - alpha * Ap;
  r = r_new;
  if (update_p) p = r_new + beta * p;
  return r_new;
}

}  // namespace i2f_fast
