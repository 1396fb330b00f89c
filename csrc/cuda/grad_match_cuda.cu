// CUDA kernel of i2f_fast::grad_match: the gradient-matching loss of R trial gradients against one
// target over the flat parameter buffer, and ∂loss/∂trial, with no host synchronisation.
//
// Algorithm: include/i2f_fast/grad_match.h. Why fused: the torch sequence is ~15 launches with
// full-length temporaries; here trial, target and weights are read at most twice, the gradient is
// written once, and every coefficient stays on the device (capturable in a CUDA graph).
// Grid mapping: each row is cut into tiles of kTile elements, one block of kThreads per
// (row, tile); partial sums go to a (tiles, ·) buffer and one block per row reduces them in a
// fixed order (deterministic). cosine: sums → plan (loss, scale, ratio) → gradient sweep;
// l2: gradient sweep with loss partials → row totals.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "i2f_fast/block_reduce.cuh"
#include "i2f_fast/checks.h"
#include "i2f_fast/grad_match.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTile = 4096;

template <typename scalar_t>
__device__ __forceinline__ double weight_at(const scalar_t* w, int64_t k) {
  return w == nullptr ? 1.0 : static_cast<double>(w[k]);
}

template <typename scalar_t>
__global__ void cosine_sums_kernel(const scalar_t* __restrict__ trial, const scalar_t* __restrict__ target,
                                   const scalar_t* __restrict__ w, GradMatchSums* __restrict__ partial,
                                   int64_t tiles_per_row, int64_t P) {
  const int64_t row = blockIdx.x / tiles_per_row, begin = (blockIdx.x % tiles_per_row) * kTile;
  const int64_t end = begin + kTile < P ? begin + kTile : P;
  double s[3] = {0, 0, 0};
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
    const double wk = weight_at(w, k), a = trial[row * P + k], b = target[k];
    s[0] += wk * a * b;
    s[1] += wk * a * a;
    s[2] += wk * b * b;
  }
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = GradMatchSums{s[0], s[1], s[2]};
}

template <typename scalar_t>
__global__ void cosine_plan_kernel(const GradMatchSums* __restrict__ partial, GradMatchPlan* __restrict__ plan,
                                   scalar_t* __restrict__ loss, int64_t tiles_per_row) {
  const int64_t row = blockIdx.x;
  double s[3] = {0, 0, 0};
  for (int64_t c = threadIdx.x; c < tiles_per_row; c += kThreads) {
    const GradMatchSums q = partial[row * tiles_per_row + c];
    s[0] += q.dot;
    s[1] += q.trial_sq;
    s[2] += q.target_sq;
  }
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) {
    const GradMatchPlan pl = grad_match_cosine_plan(GradMatchSums{s[0], s[1], s[2]});
    plan[row] = pl;
    loss[row] = static_cast<scalar_t>(pl.loss);
  }
}

template <typename scalar_t>
__global__ void cosine_grad_kernel(const scalar_t* __restrict__ trial, const scalar_t* __restrict__ target,
                                   const scalar_t* __restrict__ w, const GradMatchPlan* __restrict__ plan,
                                   scalar_t* __restrict__ grad, int64_t tiles_per_row, int64_t P) {
  const int64_t row = blockIdx.x / tiles_per_row, begin = (blockIdx.x % tiles_per_row) * kTile;
  const int64_t end = begin + kTile < P ? begin + kTile : P;
  const GradMatchPlan pl = plan[row];
  const scalar_t c_target = static_cast<scalar_t>(-pl.scale), c_trial = static_cast<scalar_t>(pl.scale * pl.ratio);
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads)
    grad[row * P + k] = grad_match_cosine_grad(trial[row * P + k], target[k], w == nullptr ? scalar_t(1) : w[k],
                                               c_target, c_trial);
}

template <typename scalar_t>
__global__ void l2_kernel(const scalar_t* __restrict__ trial, const scalar_t* __restrict__ target,
                          const scalar_t* __restrict__ w, scalar_t* __restrict__ grad, double* __restrict__ partial,
                          int64_t tiles_per_row, int64_t P) {
  const int64_t row = blockIdx.x / tiles_per_row, begin = (blockIdx.x % tiles_per_row) * kTile;
  const int64_t end = begin + kTile < P ? begin + kTile : P;
  double s[1] = {0};
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
    const scalar_t d = trial[row * P + k] - target[k];
    const scalar_t wd = w == nullptr ? d : w[k] * d;
    grad[row * P + k] = scalar_t(2) * wd;
    s[0] += static_cast<double>(wd) * d;
  }
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

template <typename scalar_t>
__global__ void row_totals_kernel(const double* __restrict__ partial, scalar_t* __restrict__ out, int64_t cols) {
  double s[1] = {0};
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) s[0] += partial[blockIdx.x * cols + c];
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<scalar_t>(s[0]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> grad_match(const at::Tensor& trial, const at::Tensor& target,
                                              const std::optional<at::Tensor>& weights, c10::string_view kind) {
  check_grad_match_args(trial, target, weights, c10::DeviceType::CUDA);
  const MatchKind k = parse_match_kind(kind);
  const c10::cuda::CUDAGuard guard(trial.device());
  const int64_t R = trial.size(0), P = trial.size(1);
  at::Tensor loss = at::empty({R}, trial.options());
  at::Tensor grad = at::empty_like(trial);
  if (R == 0) return {loss, grad};
  const int64_t tiles_per_row = (P + kTile - 1) / kTile;
  const int64_t tiles = R * tiles_per_row;
  const auto bytes = trial.options().dtype(at::kByte);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(trial.scalar_type(), "i2f_fast::grad_match (cuda)", [&] {
    const scalar_t* t = trial.const_data_ptr<scalar_t>();
    const scalar_t* g = target.const_data_ptr<scalar_t>();
    const scalar_t* w = weights.has_value() ? weights->const_data_ptr<scalar_t>() : nullptr;
    if (k == MatchKind::kL2) {
      at::Tensor partial = at::zeros({R, std::max<int64_t>(tiles_per_row, 1)}, trial.options().dtype(at::kDouble));
      if (tiles > 0) {
        l2_kernel<scalar_t><<<tiles, kThreads, 0, stream>>>(t, g, w, grad.data_ptr<scalar_t>(),
                                                             partial.data_ptr<double>(), tiles_per_row, P);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      row_totals_kernel<scalar_t><<<R, kThreads, 0, stream>>>(partial.const_data_ptr<double>(),
                                                              loss.data_ptr<scalar_t>(), partial.size(1));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    at::Tensor sums = at::zeros({std::max<int64_t>(tiles, 1) * int64_t(sizeof(GradMatchSums))}, bytes);
    at::Tensor plans = at::empty({R * int64_t(sizeof(GradMatchPlan))}, bytes);
    auto* sums_ptr = reinterpret_cast<GradMatchSums*>(sums.data_ptr());
    auto* plan_ptr = reinterpret_cast<GradMatchPlan*>(plans.data_ptr());
    if (tiles > 0) {
      cosine_sums_kernel<scalar_t><<<tiles, kThreads, 0, stream>>>(t, g, w, sums_ptr, tiles_per_row, P);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    cosine_plan_kernel<scalar_t><<<R, kThreads, 0, stream>>>(sums_ptr, plan_ptr, loss.data_ptr<scalar_t>(),
                                                             tiles_per_row);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (tiles > 0) {
      cosine_grad_kernel<scalar_t><<<tiles, kThreads, 0, stream>>>(t, g, w, plan_ptr, grad.data_ptr<scalar_t>(),
                                                                   tiles_per_row, P);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {loss, grad};
}

}  // namespace i2f_fast::cuda
