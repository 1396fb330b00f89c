// CUDA kernel of i2f_fast::ce_hvp: the softmax-cross-entropy Hessian applied per row,
// scale·(p⊙u − p (p·u)), in one launch with no host synchronisation.
//
// Algorithm: include/i2f_fast/ce_hvp.h. Grid mapping: one block of kThreads threads per row of u
// (rows of all leading dims flattened; row r uses p's row r mod N): the block reduces p·u in
// double (warp shuffles, then one warp over the warp sums), broadcasts it through shared memory
// and writes the row. Rows beyond the grid's first dimension are covered by a grid-stride loop.
// Why fused: the reference runs 5 torch ops (mul, sum, mul, sub, mul), one launch each.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "i2f_fast/ce_hvp.h"
#include "i2f_fast/checks.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = 65535;

// Sum of v over the block, returned to every thread.
__device__ double block_sum_all(double v) {
  __shared__ double warp_sums[kThreads / 32];
  __shared__ double total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
    for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) total = v;
  }
  __syncthreads();
  const double result = total;
  __syncthreads();  // the shared slots are reused by the next row
  return result;
}

template <typename scalar_t>
__global__ void ce_hvp_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ u,
                              scalar_t* __restrict__ out, int64_t R, int64_t N, int64_t C, scalar_t scale) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const scalar_t* pr = p + (r % N) * C;
    const scalar_t* ur = u + r * C;
    double acc = 0;
    for (int64_t c = threadIdx.x; c < C; c += kThreads) acc += double(pr[c]) * double(ur[c]);
    const scalar_t dot = static_cast<scalar_t>(block_sum_all(acc));
    for (int64_t c = threadIdx.x; c < C; c += kThreads) out[r * C + c] = ce_hvp_element(pr[c], ur[c], dot, scale);
  }
}

}  // namespace

at::Tensor ce_hvp(const at::Tensor& p, const at::Tensor& u, double scale) {
  check_ce_hvp_args(p, u, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(u.device());
  at::Tensor out = at::empty_like(u);
  const int64_t N = p.size(0), C = p.size(1);
  if (u.numel() == 0) return out;
  const int64_t R = u.numel() / C;
  const int64_t blocks = std::min<int64_t>(R, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "i2f_fast::ce_hvp (cuda)", [&] {
    ce_hvp_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(p.const_data_ptr<scalar_t>(),
                                                             u.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                             R, N, C, static_cast<scalar_t>(scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace i2f_fast::cuda
