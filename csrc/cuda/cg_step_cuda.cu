// CUDA kernel of i2f_fast::cg_step: one CG iteration for B rows, two passes over memory, no host
// synchronisation (every coefficient stays on the device, so the step can live in a CUDA graph).
//
// Algorithm: include/i2f_fast/cg_step.h. Grid mapping: each row is cut into tiles of kTile
// elements and every (row, tile) pair is one block of kThreads threads; partial sums go to a
// (tiles, ·) buffer and are reduced per row by one block per row, in a fixed order (results are
// deterministic). Launches per call: row sums → row plan → fused update → row finish → (rows
// whose β needs the exact r'·r') direction fix-up; the last one returns at once for other rows.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "i2f_fast/block_reduce.cuh"
#include "i2f_fast/cg_step.h"
#include "i2f_fast/checks.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTile = 4096;  // elements per block (16 per thread)

struct Tile {
  int64_t row, begin, n;
};

__device__ Tile tile_of(int64_t t, int64_t tiles_per_row, int64_t D) {
  Tile tile;
  tile.row = t / tiles_per_row;
  tile.begin = tile.row * D + (t % tiles_per_row) * kTile;
  const int64_t row_end = (tile.row + 1) * D;
  tile.n = row_end - tile.begin < kTile ? row_end - tile.begin : kTile;
  return tile;
}

template <typename scalar_t>
__global__ void row_sums_kernel(const scalar_t* __restrict__ r, const scalar_t* __restrict__ p,
                                const scalar_t* __restrict__ Ap, const bool* __restrict__ active,
                                CgRowSums* __restrict__ partial, int64_t tiles_per_row, int64_t D) {
  const Tile tile = tile_of(blockIdx.x, tiles_per_row, D);
  double s[4] = {0, 0, 0, 0};
  if (active[tile.row]) {
    for (int64_t i = tile.begin + threadIdx.x; i < tile.begin + tile.n; i += kThreads) {
      const double a = Ap[i], pi = p[i], ri = r[i];
      s[0] += pi * a;
      s[1] += ri * a;
      s[2] += a * a;
      s[3] += ri * ri;
    }
  }
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = CgRowSums{s[0], s[1], s[2], s[3]};
}

template <typename scalar_t>
__global__ void row_plan_kernel(const CgRowSums* __restrict__ partial, const scalar_t* __restrict__ rr_in,
                                const bool* __restrict__ active, CgRowPlan* __restrict__ plan,
                                int64_t tiles_per_row) {
  const int64_t row = blockIdx.x;
  double s[4] = {0, 0, 0, 0};
  for (int64_t c = threadIdx.x; c < tiles_per_row; c += kThreads) {
    const CgRowSums q = partial[row * tiles_per_row + c];
    s[0] += q.pAp;
    s[1] += q.rAp;
    s[2] += q.ApAp;
    s[3] += q.rr;
  }
  block_sum<kThreads>(s);
  if (threadIdx.x == 0)
    plan[row] = cg_row_plan(active[row], static_cast<double>(rr_in[row]), CgRowSums{s[0], s[1], s[2], s[3]});
}

template <typename scalar_t>
__global__ void update_kernel(scalar_t* __restrict__ x, scalar_t* __restrict__ r, scalar_t* __restrict__ p,
                              const scalar_t* __restrict__ Ap, const CgRowPlan* __restrict__ plan,
                              double* __restrict__ rr_partial, int64_t tiles_per_row, int64_t D) {
  const Tile tile = tile_of(blockIdx.x, tiles_per_row, D);
  const CgRowPlan pl = plan[tile.row];
  if (!pl.step) return;  // the whole block leaves together: no divergent __syncthreads below
  const scalar_t alpha = static_cast<scalar_t>(pl.alpha), beta = static_cast<scalar_t>(pl.beta);
  const bool update_p = !pl.exact_beta;
  double s[1] = {0};
  for (int64_t i = tile.begin + threadIdx.x; i < tile.begin + tile.n; i += kThreads) {
    scalar_t xi = x[i], ri = r[i], pi = p[i];
    const double rn = cg_update_element(xi, ri, pi, Ap[i], alpha, beta, update_p);
    x[i] = xi;
    r[i] = ri;
    if (update_p) p[i] = pi;
    s[0] += rn * rn;
  }
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) rr_partial[blockIdx.x] = s[0];
}

template <typename scalar_t>
__global__ void row_finish_kernel(const double* __restrict__ rr_partial, const scalar_t* __restrict__ rr_in,
                                  CgRowPlan* __restrict__ plan, scalar_t* __restrict__ rr_out,
                                  bool* __restrict__ stepped, int64_t tiles_per_row) {
  const int64_t row = blockIdx.x;
  const CgRowPlan pl = plan[row];
  if (!pl.step) {
    if (threadIdx.x == 0) {
      rr_out[row] = rr_in[row];
      stepped[row] = false;
    }
    return;
  }
  double s[1] = {0};
  for (int64_t c = threadIdx.x; c < tiles_per_row; c += kThreads) s[0] += rr_partial[row * tiles_per_row + c];
  block_sum<kThreads>(s);
  if (threadIdx.x == 0) {
    rr_out[row] = static_cast<scalar_t>(s[0]);
    stepped[row] = true;
    if (pl.exact_beta) plan[row].beta = cg_exact_beta(static_cast<double>(rr_in[row]), s[0]);
  }
}

template <typename scalar_t>
__global__ void exact_beta_kernel(const scalar_t* __restrict__ r, scalar_t* __restrict__ p,
                                  const CgRowPlan* __restrict__ plan, int64_t tiles_per_row, int64_t D) {
  const Tile tile = tile_of(blockIdx.x, tiles_per_row, D);
  const CgRowPlan pl = plan[tile.row];
  if (!pl.exact_beta) return;
  const scalar_t beta = static_cast<scalar_t>(pl.beta);
  for (int64_t i = tile.begin + threadIdx.x; i < tile.begin + tile.n; i += kThreads) p[i] = r[i] + beta * p[i];
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> cg_step(at::Tensor& x, at::Tensor& r, at::Tensor& p, const at::Tensor& Ap,
                                           const at::Tensor& rr, const at::Tensor& active) {
  check_cg_step_args(x, r, p, Ap, rr, active, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor rr_c = rr.contiguous();
  const at::Tensor active_c = active.contiguous();
  at::Tensor rr_new = at::empty_like(rr_c);
  at::Tensor stepped = at::empty_like(active_c);
  const int64_t B = x.size(0), D = x.size(1);
  if (B == 0) return {rr_new, stepped};
  const int64_t tiles_per_row = (D + kTile - 1) / kTile;
  const int64_t tiles = B * tiles_per_row;
  const auto opts = x.options().dtype(at::kByte);
  at::Tensor sums = at::empty({std::max<int64_t>(tiles, 1) * int64_t(sizeof(CgRowSums))}, opts);
  at::Tensor rr_partial = at::empty({std::max<int64_t>(tiles, 1) * int64_t(sizeof(double))}, opts);
  at::Tensor plans = at::empty({B * int64_t(sizeof(CgRowPlan))}, opts);
  auto* sums_ptr = reinterpret_cast<CgRowSums*>(sums.data_ptr());
  auto* rr_partial_ptr = reinterpret_cast<double*>(rr_partial.data_ptr());
  auto* plan_ptr = reinterpret_cast<CgRowPlan*>(plans.data_ptr());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "i2f_fast::cg_step (cuda)", [&] {
    const bool* act = active_c.const_data_ptr<bool>();
    const scalar_t* rr_in = rr_c.const_data_ptr<scalar_t>();
    if (tiles > 0) {
      row_sums_kernel<scalar_t><<<tiles, kThreads, 0, stream>>>(
          r.const_data_ptr<scalar_t>(), p.const_data_ptr<scalar_t>(), Ap.const_data_ptr<scalar_t>(), act, sums_ptr,
          tiles_per_row, D);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    row_plan_kernel<scalar_t><<<B, kThreads, 0, stream>>>(sums_ptr, rr_in, act, plan_ptr, tiles_per_row);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (tiles > 0) {
      update_kernel<scalar_t><<<tiles, kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), Ap.const_data_ptr<scalar_t>(),
          plan_ptr, rr_partial_ptr, tiles_per_row, D);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    row_finish_kernel<scalar_t><<<B, kThreads, 0, stream>>>(rr_partial_ptr, rr_in, plan_ptr,
                                                             rr_new.data_ptr<scalar_t>(), stepped.data_ptr<bool>(),
                                                             tiles_per_row);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (tiles > 0) {
      exact_beta_kernel<scalar_t><<<tiles, kThreads, 0, stream>>>(r.const_data_ptr<scalar_t>(),
                                                                  p.data_ptr<scalar_t>(), plan_ptr, tiles_per_row, D);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {rr_new, stepped};
}

}  // namespace i2f_fast::cuda
