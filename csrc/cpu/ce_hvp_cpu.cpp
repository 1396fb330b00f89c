// C++/OpenMP kernel of i2f_fast::ce_hvp: the softmax-cross-entropy Hessian applied per row,
// scale·(p⊙u − p (p·u)), in one pass per row (the dot in double, then the output).
//
// Algorithm: include/i2f_fast/ce_hvp.h. Work mapping: u is viewed as R = numel(u)/C rows of C;
// row r uses p's row r mod N. Rows are spread over threads with at::parallel_for (OpenMP), with a
// grain that keeps ≥ 32k elements per task (N = 1, C = 10 runs inline on the calling thread).
// Why fused: the reference runs 5 torch ops (mul, sum, mul, sub, mul) with temporaries.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include "i2f_fast/ce_hvp.h"
#include "i2f_fast/checks.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kGrainElements = 32768;  // ATen's grain for elementwise ops (see dual_act_cpu.cpp)

template <typename T>
void ce_hvp_impl(const T* p, const T* u, T* out, int64_t R, int64_t N, int64_t C, T scale) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(C, 1));
  at::parallel_for(0, R, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* pr = p + (r % N) * C;
      const T* ur = u + r * C;
      T* orow = out + r * C;
      double dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) dot += static_cast<double>(pr[c]) * static_cast<double>(ur[c]);
      const T d = static_cast<T>(dot);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) orow[c] = ce_hvp_element(pr[c], ur[c], d, scale);
    }
  });
}

}  // namespace

at::Tensor ce_hvp(const at::Tensor& p, const at::Tensor& u, double scale) {
  check_ce_hvp_args(p, u, c10::DeviceType::CPU);
  at::Tensor out = at::empty_like(u);
  const int64_t N = p.size(0), C = p.size(1);
  if (u.numel() == 0) return out;
  const int64_t R = u.numel() / C;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "i2f_fast::ce_hvp (cpu)", [&] {
    ce_hvp_impl<scalar_t>(p.const_data_ptr<scalar_t>(), u.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), R, N,
                          C, static_cast<scalar_t>(scale));
  });
  return out;
}

}  // namespace i2f_fast::cpu
