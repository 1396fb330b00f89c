// Block-wide sums for the CUDA kernels (csrc/cuda/*.cu): each thread holds N double partial sums;
// warp shuffles, then one warp over the per-warp results. The reduction order is fixed, so the
// results are deterministic. Include from .cu files only.
#pragma once

namespace i2f_fast::cuda {

// Sum of `v` over a block of `Threads` threads (a multiple of 32, at most 1024); the result is
// valid in thread 0. Every thread of the block must call it (it synchronises the block).
template <int Threads, int N>
__device__ __forceinline__ void block_sum(double (&v)[N]) {
  static_assert(Threads % 32 == 0 && Threads <= 1024, "block_sum: Threads must be a multiple of 32, <= 1024");
  __shared__ double warp_sums[Threads / 32][N];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < N; ++k)
    for (int off = 16; off > 0; off /= 2) v[k] += __shfl_down_sync(0xffffffffu, v[k], off);
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < N; ++k) warp_sums[warp][k] = v[k];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      v[k] = lane < Threads / 32 ? warp_sums[lane][k] : 0.0;
      for (int off = 16; off > 0; off /= 2) v[k] += __shfl_down_sync(0xffffffffu, v[k], off);
    }
  }
}

}  // namespace i2f_fast::cuda
