// C++/OpenMP kernel of i2f_fast::cg_step: one CG iteration for B rows in two passes over memory.
//
// Algorithm: see include/i2f_fast/cg_step.h (pass 1: four row sums in double; pass 2: the fused
// x / r / p update plus the exact r'·r'; pass 3 only for rows whose β needs the exact sum).
// Work mapping: every row is cut into chunks of kChunk elements and the (row, chunk) tiles are
// spread over threads with at::parallel_for (OpenMP), so B = 1 with a long row and many short
// rows both use all cores. Each tile writes its partial sums to its own slot and the rows are
// reduced afterwards in a fixed order: results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <vector>

#include "i2f_fast/cg_step.h"
#include "i2f_fast/checks.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kChunk = 4096;      // elements per tile: four float32 arrays stay in L1/L2
constexpr int64_t kGrainTiles = 8;    // fewer tiles than this run on the calling thread

template <typename scalar_t>
CgRowSums tile_sums(const scalar_t* r, const scalar_t* p, const scalar_t* Ap, int64_t n) {
  double pAp = 0, rAp = 0, ApAp = 0, rr = 0;
#pragma omp simd reduction(+ : pAp, rAp, ApAp, rr)
  for (int64_t i = 0; i < n; ++i) {
    const double a = Ap[i], pi = p[i], ri = r[i];
    pAp += pi * a;
    rAp += ri * a;
    ApAp += a * a;
    rr += ri * ri;
  }
  return {pAp, rAp, ApAp, rr};
}

template <typename scalar_t>
double tile_update(scalar_t* x, scalar_t* r, scalar_t* p, const scalar_t* Ap, int64_t n, scalar_t alpha,
                   scalar_t beta, bool update_p) {
  double rr_new = 0;
  if (update_p) {
#pragma omp simd reduction(+ : rr_new)
    for (int64_t i = 0; i < n; ++i) {
      const double rn = cg_update_element(x[i], r[i], p[i], Ap[i], alpha, beta, true);
      rr_new += rn * rn;
    }
  } else {
#pragma omp simd reduction(+ : rr_new)
    for (int64_t i = 0; i < n; ++i) {
      const double rn = cg_update_element(x[i], r[i], p[i], Ap[i], alpha, beta, false);
      rr_new += rn * rn;
    }
  }
  return rr_new;
}

template <typename scalar_t>
void cg_step_impl(scalar_t* x, scalar_t* r, scalar_t* p, const scalar_t* Ap, const scalar_t* rr_in,
                  const bool* active, scalar_t* rr_out, bool* stepped, int64_t B, int64_t D) {
  const int64_t chunks = D == 0 ? 0 : (D + kChunk - 1) / kChunk;
  const int64_t tiles = B * chunks;
  auto tile_range = [&](int64_t t, int64_t& row, int64_t& begin, int64_t& n) {
    row = t / chunks;
    begin = row * D + (t % chunks) * kChunk;
    n = std::min(kChunk, (row + 1) * D - begin);
  };

  // Pass 1: partial row sums of the active rows.
  std::vector<CgRowSums> partial(tiles, CgRowSums{0, 0, 0, 0});
  at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t row, begin, n;
      tile_range(t, row, begin, n);
      if (active[row]) partial[t] = tile_sums(r + begin, p + begin, Ap + begin, n);
    }
  });
  std::vector<CgRowPlan> plan(B);
  for (int64_t b = 0; b < B; ++b) {
    CgRowSums s{0, 0, 0, 0};
    for (int64_t c = 0; c < chunks; ++c) {
      const CgRowSums& q = partial[b * chunks + c];
      s.pAp += q.pAp;
      s.rAp += q.rAp;
      s.ApAp += q.ApAp;
      s.rr += q.rr;
    }
    plan[b] = cg_row_plan(active[b], static_cast<double>(rr_in[b]), s);
  }

  // Pass 2: x += αp, r -= αAp, p = r + βp (rows with a closed-form β), partial r'·r'.
  std::vector<double> rr_partial(tiles, 0.0);
  at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t row, begin, n;
      tile_range(t, row, begin, n);
      const CgRowPlan& pl = plan[row];
      if (!pl.step) continue;
      rr_partial[t] = tile_update(x + begin, r + begin, p + begin, Ap + begin, n, static_cast<scalar_t>(pl.alpha),
                                  static_cast<scalar_t>(pl.beta), !pl.exact_beta);
    }
  });
  bool any_exact = false;
  for (int64_t b = 0; b < B; ++b) {
    stepped[b] = plan[b].step;
    if (!plan[b].step) {
      rr_out[b] = rr_in[b];
      continue;
    }
    double s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += rr_partial[b * chunks + c];
    rr_out[b] = static_cast<scalar_t>(s);
    if (plan[b].exact_beta) {
      plan[b].beta = cg_exact_beta(static_cast<double>(rr_in[b]), s);
      any_exact = true;
    }
  }

  // Pass 3 (rare): p = r' + βp with β from the exact r'·r'.
  if (!any_exact) return;
  at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t row, begin, n;
      tile_range(t, row, begin, n);
      if (!plan[row].exact_beta) continue;
      const scalar_t beta = static_cast<scalar_t>(plan[row].beta);
      scalar_t* pp = p + begin;
      const scalar_t* rp = r + begin;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) pp[i] = rp[i] + beta * pp[i];
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> cg_step(at::Tensor& x, at::Tensor& r, at::Tensor& p, const at::Tensor& Ap,
                                           const at::Tensor& rr, const at::Tensor& active) {
  check_cg_step_args(x, r, p, Ap, rr, active, c10::DeviceType::CPU);
  const at::Tensor rr_c = rr.contiguous();
  const at::Tensor active_c = active.contiguous();
  at::Tensor rr_new = at::empty_like(rr_c);
  at::Tensor stepped = at::empty_like(active_c);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "i2f_fast::cg_step (cpu)", [&] {
    cg_step_impl<scalar_t>(x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
                           Ap.const_data_ptr<scalar_t>(), rr_c.const_data_ptr<scalar_t>(),
                           active_c.const_data_ptr<bool>(), rr_new.data_ptr<scalar_t>(), stepped.data_ptr<bool>(),
                           x.size(0), x.size(1));
  });
  return {rr_new, stepped};
}

}  // namespace i2f_fast::cpu
