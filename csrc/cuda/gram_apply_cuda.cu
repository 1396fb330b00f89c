// CUDA kernel of i2f_fast::gram_apply: (U a + u_b, Uᵀ e) for U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ in every
// (tangent k, group g) program, without forming U; two launches, no host synchronisation.
//
// Algorithm: include/i2f_fast/gram_apply.h. Grid mapping:
//   gram_kernel: one block of kThreads per (program p, row n, column m) triple (a grid-stride
//     loop over k·G·S² triples): the block reduces the four dot products a_n·a_m, ȧ_n·a_m,
//     ė_n·e_m, e_n·e_m (acc_t: double for float64, float for float32) and writes coef[p][q][n][m]
//     to a workspace of k·G·4·S² numbers.
//   apply_kernel: blockIdx.x runs over the k·G·S output rows (p, m), blockIdx.y over column tiles
//     of kThreads; thread j sums the S scaled rows of ua (column j < O) and of ute (j < I).
// Why fused: the reference runs six batched GEMMs, an add and two transposes; at the engine's
// small S (1, N, N·tokens) these are launch-bound.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <type_traits>

#include "i2f_fast/checks.h"
#include "i2f_fast/gram_apply.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = 65535;

// Sum of the four values of v over the block; valid in thread 0.
template <typename acc_t>
__device__ void block_sum4(acc_t (&v)[4]) {
  __shared__ acc_t warp_sums[kThreads / 32][4];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int q = 0; q < 4; ++q)
    for (int off = 16; off > 0; off /= 2) v[q] += __shfl_down_sync(0xffffffffu, v[q], off);
  if (lane == 0)
#pragma unroll
    for (int q = 0; q < 4; ++q) warp_sums[warp][q] = v[q];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      v[q] = lane < kThreads / 32 ? warp_sums[lane][q] : acc_t(0);
      for (int off = 16; off > 0; off /= 2) v[q] += __shfl_down_sync(0xffffffffu, v[q], off);
    }
  }
  __syncthreads();  // the shared slots are reused by the next triple
}

template <typename scalar_t, typename acc_t>
__global__ void gram_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ e,
                            const scalar_t* __restrict__ adot, const scalar_t* __restrict__ edot,
                            acc_t* __restrict__ coef, int64_t triples, int64_t G, int64_t S, int64_t I, int64_t O,
                            acc_t bias) {
  for (int64_t x = blockIdx.x; x < triples; x += gridDim.x) {
    const int64_t m = x % S, n = (x / S) % S, p = x / (S * S), g = p % G;
    const scalar_t* an = a + (g * S + n) * I;
    const scalar_t* am = a + (g * S + m) * I;
    const scalar_t* en = e + (g * S + n) * O;
    const scalar_t* em = e + (g * S + m) * O;
    const scalar_t* adn = adot + (p * S + n) * I;
    const scalar_t* edn = edot + (p * S + n) * O;
    acc_t v[4] = {0, 0, 0, 0};
    for (int64_t i = threadIdx.x; i < I; i += kThreads) {
      const acc_t ami = am[i];
      v[0] += acc_t(an[i]) * ami;
      v[1] += acc_t(adn[i]) * ami;
    }
    for (int64_t o = threadIdx.x; o < O; o += kThreads) {
      const acc_t emo = em[o];
      v[2] += acc_t(edn[o]) * emo;
      v[3] += acc_t(en[o]) * emo;
    }
    block_sum4(v);
    if (threadIdx.x == 0) {
      acc_t* c = coef + p * gram_coef_count(S);
      c[gram_coef_index(0, n, m, S)] = v[0] + bias;
      c[gram_coef_index(1, n, m, S)] = v[1];
      c[gram_coef_index(2, n, m, S)] = v[2];
      c[gram_coef_index(3, n, m, S)] = v[3];
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void apply_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ e,
                             const scalar_t* __restrict__ adot, const scalar_t* __restrict__ edot,
                             const acc_t* __restrict__ coef, scalar_t* __restrict__ ua, scalar_t* __restrict__ ute,
                             int64_t rows, int64_t G, int64_t S, int64_t I, int64_t O) {
  const int64_t j = blockIdx.y * int64_t(kThreads) + threadIdx.x;
  for (int64_t x = blockIdx.x; x < rows; x += gridDim.x) {
    const int64_t m = x % S, p = x / S, g = p % G;
    const acc_t* c = coef + p * gram_coef_count(S);
    if (j < O) {
      acc_t acc = 0;
      for (int64_t n = 0; n < S; ++n)
        acc += c[gram_coef_index(0, n, m, S)] * acc_t(edot[(p * S + n) * O + j]) +
               c[gram_coef_index(1, n, m, S)] * acc_t(e[(g * S + n) * O + j]);
      ua[x * O + j] = static_cast<scalar_t>(acc);
    }
    if (j < I) {
      acc_t acc = 0;
      for (int64_t n = 0; n < S; ++n)
        acc += c[gram_coef_index(2, n, m, S)] * acc_t(a[(g * S + n) * I + j]) +
               c[gram_coef_index(3, n, m, S)] * acc_t(adot[(p * S + n) * I + j]);
      ute[x * I + j] = static_cast<scalar_t>(acc);
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gram_apply(const at::Tensor& a, const at::Tensor& e, const at::Tensor& adot,
                                              const at::Tensor& edot, bool bias) {
  check_gram_apply_args(a, e, adot, edot, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t K = adot.size(0), G = a.size(0), S = a.size(1), I = a.size(2), O = e.size(2);
  at::Tensor ua = at::empty({K, G, S, O}, a.options());
  at::Tensor ute = at::empty({K, G, S, I}, a.options());
  const int64_t programs = K * G;
  if (programs * S == 0) return {ua, ute};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "i2f_fast::gram_apply (cuda)", [&] {
    using acc_t = scalar_t;  // float32 Grams in float32, float64 in double (the op's contract)
    at::Tensor work = at::empty({programs * gram_coef_count(S)}, a.options());
    acc_t* coef = work.data_ptr<acc_t>();
    const int64_t triples = programs * S * S;
    gram_kernel<scalar_t, acc_t><<<std::min(triples, kMaxBlocks), kThreads, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), e.const_data_ptr<scalar_t>(), adot.const_data_ptr<scalar_t>(),
        edot.const_data_ptr<scalar_t>(), coef, triples, G, S, I, O, bias ? acc_t(1) : acc_t(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t rows = programs * S;
    const int64_t col_tiles = std::max<int64_t>(1, (std::max(I, O) + kThreads - 1) / kThreads);
    const dim3 grid(static_cast<unsigned>(std::min(rows, kMaxBlocks)), static_cast<unsigned>(col_tiles));
    apply_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), e.const_data_ptr<scalar_t>(), adot.const_data_ptr<scalar_t>(),
        edot.const_data_ptr<scalar_t>(), coef, ua.data_ptr<scalar_t>(), ute.data_ptr<scalar_t>(), rows, G, S, I, O);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {ua, ute};
}

}  // namespace i2f_fast::cuda
