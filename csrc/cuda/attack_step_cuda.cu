// CUDA kernel of i2f_fast::attack_step: one (signed) Adam step of the attack's candidate images
// plus the box projection, in place, no host synchronisation.
//
// Algorithm: include/i2f_fast/attack_step.h. Why fused: one launch reads x, grad and the two
// moments once and writes x and the moments once (the torch sequence is ~12 launches); the step
// size and bias corrections are read from device memory, so the launch can live in a CUDA graph
// whose replays see the values the graph itself (or the host, between replays) wrote there.
// Grid mapping: a grid-stride loop over the R·inner elements; element e uses lr[e / inner] (or
// the one lr) and the bounds' element e % inner.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "i2f_fast/attack_step.h"
#include "i2f_fast/checks.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

template <typename scalar_t>
__global__ void attack_step_kernel(scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                   scalar_t* __restrict__ m, scalar_t* __restrict__ v, const scalar_t* __restrict__ lr,
                                   bool per_row_lr, const scalar_t* __restrict__ bc1,
                                   const scalar_t* __restrict__ bc2, AdamCoefficients<scalar_t> c,
                                   const scalar_t* __restrict__ lower, const scalar_t* __restrict__ upper,
                                   int64_t numel, int64_t inner) {
  const scalar_t inv_bc1 = scalar_t(1) / bc1[0];
  const scalar_t inv_sqrt_bc2 = scalar_t(1) / sqrt(bc2[0]);
  for (int64_t e = blockIdx.x * int64_t(kThreads) + threadIdx.x; e < numel; e += int64_t(gridDim.x) * kThreads) {
    const scalar_t step = lr[per_row_lr ? e / inner : 0] * inv_bc1;
    scalar_t xe = x[e], me = m[e], ve = v[e];
    adam_element(xe, g[e], me, ve, step, inv_sqrt_bc2, c);
    x[e] = box_element(xe, lower, upper, e % inner);
    m[e] = me;
    v[e] = ve;
  }
}

}  // namespace

void attack_step(at::Tensor& x, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                 const at::Tensor& lr, const at::Tensor& bias_correction1, const at::Tensor& bias_correction2,
                 double beta1, double beta2, double eps, bool sign, const std::optional<at::Tensor>& lower,
                 const std::optional<at::Tensor>& upper) {
  check_attack_step_args(x, grad, exp_avg, exp_avg_sq, lr, bias_correction1, bias_correction2, lower, upper,
                         c10::DeviceType::CUDA);
  const int64_t numel = x.numel();
  if (numel == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "i2f_fast::attack_step (cuda)", [&] {
    const AdamCoefficients<scalar_t> c{static_cast<scalar_t>(1.0 - beta1), static_cast<scalar_t>(beta2),
                                       static_cast<scalar_t>(1.0 - beta2), static_cast<scalar_t>(eps), sign};
    attack_step_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), exp_avg.data_ptr<scalar_t>(),
        exp_avg_sq.data_ptr<scalar_t>(), lr.const_data_ptr<scalar_t>(), lr.numel() > 1,
        bias_correction1.const_data_ptr<scalar_t>(), bias_correction2.const_data_ptr<scalar_t>(), c,
        lower.has_value() ? lower->const_data_ptr<scalar_t>() : nullptr,
        upper.has_value() ? upper->const_data_ptr<scalar_t>() : nullptr, numel, x.numel() / x.size(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace i2f_fast::cuda
