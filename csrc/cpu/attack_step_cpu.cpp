// C++/OpenMP kernel of i2f_fast::attack_step: one (signed) Adam step of the attack's candidate
// images plus the box projection, in place, in one pass.
//
// Algorithm: include/i2f_fast/attack_step.h. Why fused: the torch sequence (attack_step_ref) is
// ~12 ops, each a full pass with temporaries (sign, lerp, mul, addcmul, sqrt, div, add, mul,
// addcdiv, clamp); here x, grad, m and v are read once and x, m, v written once.
// Work mapping: the R restarts × inner elements are one flat range split over threads with
// at::parallel_for; element k of restart r uses lr[r] (or the one lr) and bound[k mod inner].
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "i2f_fast/attack_step.h"
#include "i2f_fast/checks.h"
#include "i2f_fast/cpu_clones.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kGrain = 16384;

// One restart's contiguous segment [0, n): the element update and the box. Compiled once per
// (sign, lower, upper) combination so that the loop has no branches and vectorises (sqrt and
// division included), and once per vector unit (I2F_FAST_CPU_CLONES).
template <typename scalar_t, bool kSign, bool kLower, bool kUpper>
I2F_FAST_CPU_CLONES void adam_segment(scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                      scalar_t* __restrict__ m, scalar_t* __restrict__ v,
                                      const scalar_t* __restrict__ lower, const scalar_t* __restrict__ upper,
                                      int64_t n, scalar_t step, scalar_t inv_sqrt_bc2, AdamCoefficients<scalar_t> c) {
  c.sign = kSign;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    scalar_t xi = x[i], mi = m[i], vi = v[i];
    adam_element(xi, g[i], mi, vi, step, inv_sqrt_bc2, c);
    if constexpr (kLower) xi = xi < lower[i] ? lower[i] : xi;
    if constexpr (kUpper) xi = xi > upper[i] ? upper[i] : xi;
    x[i] = xi;
    m[i] = mi;
    v[i] = vi;
  }
}

template <typename scalar_t, bool kSign, bool kLower, bool kUpper>
void attack_step_impl(scalar_t* x, const scalar_t* g, scalar_t* m, scalar_t* v, const scalar_t* lr, int64_t lr_numel,
                      scalar_t bc1, scalar_t bc2, const AdamCoefficients<scalar_t>& c, const scalar_t* lower,
                      const scalar_t* upper, int64_t rows, int64_t inner) {
  const scalar_t inv_sqrt_bc2 = scalar_t(1) / std::sqrt(bc2);
  at::parallel_for(0, rows * inner, kGrain, [&](int64_t k0, int64_t k1) {
    for (int64_t e = k0; e < k1;) {  // one restart's segment at a time
      const int64_t row = e / inner, end = std::min(k1, (row + 1) * inner), k = e - row * inner;
      const scalar_t step = lr[lr_numel == 1 ? 0 : row] / bc1;
      adam_segment<scalar_t, kSign, kLower, kUpper>(x + e, g + e, m + e, v + e, kLower ? lower + k : nullptr,
                                                    kUpper ? upper + k : nullptr, end - e, step, inv_sqrt_bc2, c);
      e = end;
    }
  });
}

template <typename scalar_t>
void attack_step_dispatch(bool sign, bool has_lower, bool has_upper, scalar_t* x, const scalar_t* g, scalar_t* m,
                          scalar_t* v, const scalar_t* lr, int64_t lr_numel, scalar_t bc1, scalar_t bc2,
                          const AdamCoefficients<scalar_t>& c, const scalar_t* lower, const scalar_t* upper,
                          int64_t rows, int64_t inner) {
  const int variant = (sign ? 4 : 0) | (has_lower ? 2 : 0) | (has_upper ? 1 : 0);
#define I2F_FAST_ATTACK_STEP_CASE(S, L, U)                                                                    \
  case (S ? 4 : 0) | (L ? 2 : 0) | (U ? 1 : 0):                                                              \
    return attack_step_impl<scalar_t, S, L, U>(x, g, m, v, lr, lr_numel, bc1, bc2, c, lower, upper, rows, inner);
  switch (variant) {
    I2F_FAST_ATTACK_STEP_CASE(false, false, false)
    I2F_FAST_ATTACK_STEP_CASE(false, false, true)
    I2F_FAST_ATTACK_STEP_CASE(false, true, false)
    I2F_FAST_ATTACK_STEP_CASE(false, true, true)
    I2F_FAST_ATTACK_STEP_CASE(true, false, false)
    I2F_FAST_ATTACK_STEP_CASE(true, false, true)
    I2F_FAST_ATTACK_STEP_CASE(true, true, false)
    I2F_FAST_ATTACK_STEP_CASE(true, true, true)
  }
#undef I2F_FAST_ATTACK_STEP_CASE
}

}  // namespace

void attack_step(at::Tensor& x, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                 const at::Tensor& lr, const at::Tensor& bias_correction1, const at::Tensor& bias_correction2,
                 double beta1, double beta2, double eps, bool sign, const std::optional<at::Tensor>& lower,
                 const std::optional<at::Tensor>& upper) {
  check_attack_step_args(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, lower, upper,
                         c10::DeviceType::CPU);
  const int64_t rows = x.size(0);
  if (x.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "i2f_fast::attack_step (cpu)", [&] {
    const AdamCoefficients<scalar_t> c{static_cast<scalar_t>(1.0 - beta1), static_cast<scalar_t>(beta2),
                                       static_cast<scalar_t>(1.0 - beta2), static_cast<scalar_t>(eps), sign};
    attack_step_dispatch<scalar_t>(
        sign, lower.has_value(), upper.has_value(), x.data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
        exp_avg.data_ptr<scalar_t>(), exp_avg_sq.data_ptr<scalar_t>(), lr.const_data_ptr<scalar_t>(), lr.numel(),
        *bias_correction1.const_data_ptr<scalar_t>(), *bias_correction2.const_data_ptr<scalar_t>(), c,
        lower.has_value() ? lower->const_data_ptr<scalar_t>() : nullptr,
        upper.has_value() ? upper->const_data_ptr<scalar_t>() : nullptr, rows, x.numel() / rows);
  });
}

}  // namespace i2f_fast::cpu
