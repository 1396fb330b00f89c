// C++/OpenMP kernel of i2f_fast::grad_match: the gradient-matching loss of R trial gradients
// against one target over the flat parameter buffer, and ∂loss/∂trial, in one fused op.
//
// Algorithm: include/i2f_fast/grad_match.h. cosine: pass 1 accumulates ⟨g',g⟩_w, ‖g'‖²_w and
// ‖g‖²_w per row in double; pass 2 writes the gradient. l2: one pass writes the gradient and
// accumulates the loss. Why fused: the torch sequence (grad_match_ref) is ~15 ops with as many
// full-length temporaries; here trial, target and weights are read at most twice and the gradient
// written once, with no temporaries.
// Work mapping: every row is cut into chunks of kChunk elements and the (row, chunk) tiles are
// spread over threads with at::parallel_for; each tile writes its partial sums to its own slot,
// reduced per row in a fixed order afterwards, so results do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <vector>

#include "i2f_fast/checks.h"
#include "i2f_fast/cpu_clones.h"
#include "i2f_fast/grad_match.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kChunk = 4096;
constexpr int64_t kGrainTiles = 8;

// The per-tile loops, one instantiation with weights and one without (no branch inside), each
// compiled once per vector unit (I2F_FAST_CPU_CLONES). Tiles are [begin, begin + n) of one row.
template <typename scalar_t, bool kWeighted>
I2F_FAST_CPU_CLONES double l2_tile(const scalar_t* __restrict__ trial, const scalar_t* __restrict__ target,
                                   const scalar_t* __restrict__ w, scalar_t* __restrict__ grad, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < n; ++k) {
    const scalar_t d = trial[k] - target[k];
    const scalar_t wd = kWeighted ? w[k] * d : d;
    grad[k] = scalar_t(2) * wd;
    s += static_cast<double>(wd) * d;
  }
  return s;
}

template <typename scalar_t, bool kWeighted>
I2F_FAST_CPU_CLONES GradMatchSums cosine_sums_tile(const scalar_t* __restrict__ trial,
                                                   const scalar_t* __restrict__ target,
                                                   const scalar_t* __restrict__ w, int64_t n) {
  double dot = 0, trial_sq = 0, target_sq = 0;
#pragma omp simd reduction(+ : dot, trial_sq, target_sq)
  for (int64_t k = 0; k < n; ++k) {
    const double wk = kWeighted ? static_cast<double>(w[k]) : 1.0, a = trial[k], b = target[k];
    dot += wk * a * b;
    trial_sq += wk * a * a;
    target_sq += wk * b * b;
  }
  return {dot, trial_sq, target_sq};
}

template <typename scalar_t, bool kWeighted>
I2F_FAST_CPU_CLONES void cosine_grad_tile(const scalar_t* __restrict__ trial, const scalar_t* __restrict__ target,
                                          const scalar_t* __restrict__ w, scalar_t* __restrict__ grad, int64_t n,
                                          scalar_t c_target, scalar_t c_trial) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k)
    grad[k] = grad_match_cosine_grad(trial[k], target[k], kWeighted ? w[k] : scalar_t(1), c_target, c_trial);
}

template <typename scalar_t, bool kWeighted>
void grad_match_impl(const scalar_t* trial, const scalar_t* target, const scalar_t* w, MatchKind kind, int64_t R,
                     int64_t P, scalar_t* loss, scalar_t* grad) {
  const int64_t chunks = P == 0 ? 0 : (P + kChunk - 1) / kChunk;
  const int64_t tiles = R * chunks;
  // body(tile, row offset, column offset, length) for every (row, chunk) tile, spread over threads
  auto for_tiles = [&](auto&& body) {
    at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = t / chunks, begin = (t % chunks) * kChunk;
        body(t, row, begin, std::min(kChunk, P - begin));
      }
    });
  };
  const scalar_t* wk = kWeighted ? w : nullptr;

  if (kind == MatchKind::kL2) {
    std::vector<double> partial(tiles, 0.0);
    for_tiles([&](int64_t t, int64_t row, int64_t begin, int64_t n) {
      partial[t] = l2_tile<scalar_t, kWeighted>(trial + row * P + begin, target + begin,
                                                kWeighted ? wk + begin : nullptr, grad + row * P + begin, n);
    });
    for (int64_t r = 0; r < R; ++r) {
      double s = 0;
      for (int64_t c = 0; c < chunks; ++c) s += partial[r * chunks + c];
      loss[r] = static_cast<scalar_t>(s);
    }
    return;
  }

  std::vector<GradMatchSums> partial(tiles, GradMatchSums{0, 0, 0});
  for_tiles([&](int64_t t, int64_t row, int64_t begin, int64_t n) {
    partial[t] = cosine_sums_tile<scalar_t, kWeighted>(trial + row * P + begin, target + begin,
                                                       kWeighted ? wk + begin : nullptr, n);
  });
  std::vector<scalar_t> c_target(R), c_trial(R);
  for (int64_t r = 0; r < R; ++r) {
    GradMatchSums s{0, 0, 0};
    for (int64_t c = 0; c < chunks; ++c) {
      const GradMatchSums& q = partial[r * chunks + c];
      s.dot += q.dot;
      s.trial_sq += q.trial_sq;
      s.target_sq += q.target_sq;
    }
    const GradMatchPlan plan = grad_match_cosine_plan(s);
    loss[r] = static_cast<scalar_t>(plan.loss);
    c_target[r] = static_cast<scalar_t>(-plan.scale);
    c_trial[r] = static_cast<scalar_t>(plan.scale * plan.ratio);
  }
  for_tiles([&](int64_t, int64_t row, int64_t begin, int64_t n) {
    cosine_grad_tile<scalar_t, kWeighted>(trial + row * P + begin, target + begin, kWeighted ? wk + begin : nullptr,
                                          grad + row * P + begin, n, c_target[row], c_trial[row]);
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> grad_match(const at::Tensor& trial, const at::Tensor& target,
                                              const std::optional<at::Tensor>& weights, c10::string_view kind) {
  check_grad_match_args(trial, target, weights, c10::DeviceType::CPU);
  const MatchKind k = parse_match_kind(kind);
  at::Tensor loss = at::empty({trial.size(0)}, trial.options());
  at::Tensor grad = at::empty_like(trial);
  AT_DISPATCH_FLOATING_TYPES(trial.scalar_type(), "i2f_fast::grad_match (cpu)", [&] {
    const auto impl = weights.has_value() ? grad_match_impl<scalar_t, true> : grad_match_impl<scalar_t, false>;
    impl(trial.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(),
         weights.has_value() ? weights->const_data_ptr<scalar_t>() : nullptr, k, trial.size(0), trial.size(1),
         loss.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>());
  });
  return {loss, grad};
}

}  // namespace i2f_fast::cpu
