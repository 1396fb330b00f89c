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
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kGrain = 16384;

template <typename scalar_t>
void attack_step_impl(scalar_t* x, const scalar_t* g, scalar_t* m, scalar_t* v, const scalar_t* lr, int64_t lr_numel,
                      scalar_t bc1, scalar_t bc2, const AdamCoefficients<scalar_t>& c, const scalar_t* lower,
                      const scalar_t* upper, int64_t rows, int64_t inner) {
  const scalar_t sqrt_bc2 = std::sqrt(bc2);
  at::parallel_for(0, rows * inner, kGrain, [&](int64_t k0, int64_t k1) {
    for (int64_t e = k0; e < k1;) {  // one restart's segment at a time
      const int64_t row = e / inner, end = std::min(k1, (row + 1) * inner);
      const scalar_t step = lr[lr_numel == 1 ? 0 : row] / bc1;
      const int64_t base = row * inner;
#pragma omp simd
      for (int64_t i = e; i < end; ++i) {
        adam_element(x[i], g[i], m[i], v[i], step, sqrt_bc2, c);
        x[i] = box_element(x[i], lower, upper, i - base);
      }
      e = end;
    }
  });
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
    attack_step_impl<scalar_t>(x.data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), exp_avg.data_ptr<scalar_t>(),
                               exp_avg_sq.data_ptr<scalar_t>(), lr.const_data_ptr<scalar_t>(), lr.numel(),
                               *bias_correction1.const_data_ptr<scalar_t>(),
                               *bias_correction2.const_data_ptr<scalar_t>(), c,
                               lower.has_value() ? lower->const_data_ptr<scalar_t>() : nullptr,
                               upper.has_value() ? upper->const_data_ptr<scalar_t>() : nullptr, rows,
                               x.numel() / rows);
  });
}

}  // namespace i2f_fast::cpu
