// CUDA kernel of i2f_fast::dual_act: σ'(z)⊙t + σ''(z)⊙da⊙s for every activation of the engine,
// batched over the leading dims L of t and s, in one pass with no host synchronisation.
//
// Algorithm: include/i2f_fast/dual_act.h (the reference's derivative formulas). Grid mapping: a
// grid-stride loop over the numel(t) output elements, kThreads per block; element i reads z and
// da at i mod numel(z) (they are shared by the k tangents and stay in L2). The activation is a
// kernel argument, uniform over the grid (no divergence), so one instantiation per dtype serves
// all nine; `second` is a template argument.
// Why fused: the reference runs 5–10 small torch ops (σ, products, where) with temporaries,
// one launch each.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "i2f_fast/checks.h"
#include "i2f_fast/dual_act.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <typename scalar_t, bool SECOND>
__global__ void dual_act_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ t,
                                const scalar_t* __restrict__ s, const scalar_t* __restrict__ da,
                                scalar_t* __restrict__ out, int64_t total, int64_t M, int act, scalar_t alpha,
                                scalar_t threshold) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < total; i += int64_t(gridDim.x) * kThreads) {
    const int64_t j = i % M;
    scalar_t d1, d2;
    act_derivatives<scalar_t>(act, z[j], alpha, threshold, d1, d2);
    out[i] = SECOND ? dual_act_element<scalar_t>(d1, d2 * da[j], t[i], s[i], true) : d1 * t[i];
  }
}

}  // namespace

at::Tensor dual_act(const at::Tensor& z, const at::Tensor& t, const std::optional<at::Tensor>& s,
                    const std::optional<at::Tensor>& da, c10::string_view act, double alpha, double threshold) {
  const int code = act_code(act);
  check_dual_act_args(z, t, s, da, code, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(t.device());
  at::Tensor out = at::empty_like(t);
  const int64_t M = z.numel(), total = t.numel();
  if (M == 0 || total == 0) return out;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "i2f_fast::dual_act (cuda)", [&] {
    const scalar_t a = static_cast<scalar_t>(alpha), th = static_cast<scalar_t>(threshold);
    if (s.has_value()) {
      dual_act_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(
          z.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), s->const_data_ptr<scalar_t>(),
          da->const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), total, M, code, a, th);
    } else {
      dual_act_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(
          z.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(), nullptr, nullptr, out.data_ptr<scalar_t>(),
          total, M, code, a, th);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace i2f_fast::cuda
