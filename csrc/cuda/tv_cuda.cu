// CUDA kernel of i2f_fast::tv: anisotropic total variation of R restarts of an NCHW batch, value
// and gradient in one pass, no host synchronisation.
//
// Algorithm: include/i2f_fast/tv.h (every gradient element is a gather over its four neighbours,
// so no atomics; the value adds each element's left and upper differences). Why fused: x is read
// once (neighbours hit L1/L2) and the gradient written once, instead of ~20 launches.
// Grid mapping: one block of kThreads per H×W plane (R·N·C blocks) loops over the plane; the
// plane's value goes to its own slot, and one block per restart sums its planes in a fixed order.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "i2f_fast/block_reduce.cuh"
#include "i2f_fast/checks.h"
#include "i2f_fast/kernels.h"
#include "i2f_fast/tv.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void tv_plane_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ grad,
                                double* __restrict__ plane_values, int64_t H, int64_t W, scalar_t inv_cx,
                                scalar_t inv_cy) {
  const int64_t hw = H * W;
  const scalar_t* plane = x + blockIdx.x * hw;
  scalar_t* out = grad + blockIdx.x * hw;
  double s[1] = {0};
  for (int64_t k = threadIdx.x; k < hw; k += kThreads) out[k] = tv_element(plane, k / W, k % W, H, W, inv_cx, inv_cy, s[0]);
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) plane_values[blockIdx.x] = s[0];
}

template <typename scalar_t>
__global__ void restart_totals_kernel(const double* __restrict__ plane_values, scalar_t* __restrict__ value,
                                      int64_t planes_per_restart) {
  double s[1] = {0};
  for (int64_t c = threadIdx.x; c < planes_per_restart; c += kThreads)
    s[0] += plane_values[blockIdx.x * planes_per_restart + c];
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) value[blockIdx.x] = static_cast<scalar_t>(s[0]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> tv(const at::Tensor& x) {
  check_tv_args(x, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t R = x.size(0), per_restart = x.size(1) * x.size(2), H = x.size(3), W = x.size(4);
  at::Tensor value = at::empty({R}, x.options());
  at::Tensor grad = at::empty_like(x);
  if (R == 0) return {value, grad};
  at::Tensor plane_values = at::zeros({std::max<int64_t>(R * per_restart, 1)}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "i2f_fast::tv (cuda)", [&] {
    const scalar_t inv_cx = W > 1 ? scalar_t(1) / static_cast<scalar_t>(per_restart * H * (W - 1)) : scalar_t(0);
    const scalar_t inv_cy = H > 1 ? scalar_t(1) / static_cast<scalar_t>(per_restart * (H - 1) * W) : scalar_t(0);
    if (R * per_restart > 0 && H * W > 0) {
      tv_plane_kernel<scalar_t><<<R * per_restart, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), plane_values.data_ptr<double>(), H, W, inv_cx,
          inv_cy);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    restart_totals_kernel<scalar_t><<<R, kThreads, 0, stream>>>(plane_values.const_data_ptr<double>(),
                                                                value.data_ptr<scalar_t>(), per_restart);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {value, grad};
}

}  // namespace i2f_fast::cuda
