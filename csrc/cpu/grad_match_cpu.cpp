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
#include "i2f_fast/grad_match.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kChunk = 4096;
constexpr int64_t kGrainTiles = 8;

// w[k] when weights are given, else 1.
template <typename scalar_t>
inline scalar_t weight_at(const scalar_t* w, int64_t k) {
  return w == nullptr ? scalar_t(1) : w[k];
}

template <typename scalar_t>
void grad_match_impl(const scalar_t* trial, const scalar_t* target, const scalar_t* w, MatchKind kind, int64_t R,
                     int64_t P, scalar_t* loss, scalar_t* grad) {
  const int64_t chunks = P == 0 ? 0 : (P + kChunk - 1) / kChunk;
  const int64_t tiles = R * chunks;
  auto for_tiles = [&](auto&& body) {
    at::parallel_for(0, tiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = t / chunks, begin = (t % chunks) * kChunk;
        body(t, row, begin, std::min(kChunk, P - begin));
      }
    });
  };

  if (kind == MatchKind::kL2) {
    std::vector<double> partial(tiles, 0.0);
    for_tiles([&](int64_t t, int64_t row, int64_t begin, int64_t n) {
      const scalar_t* g1 = trial + row * P;
      scalar_t* out = grad + row * P;
      double s = 0;
      for (int64_t k = begin; k < begin + n; ++k) {
        const scalar_t d = g1[k] - target[k];
        const scalar_t wd = weight_at(w, k) * d;
        out[k] = scalar_t(2) * wd;
        s += static_cast<double>(wd) * d;
      }
      partial[t] = s;
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
    const scalar_t* g1 = trial + row * P;
    double dot = 0, trial_sq = 0, target_sq = 0;
#pragma omp simd reduction(+ : dot, trial_sq, target_sq)
    for (int64_t k = begin; k < begin + n; ++k) {
      const double wk = weight_at(w, k), a = g1[k], b = target[k];
      dot += wk * a * b;
      trial_sq += wk * a * a;
      target_sq += wk * b * b;
    }
    partial[t] = {dot, trial_sq, target_sq};
  });
  std::vector<GradMatchPlan> plan(R);
  for (int64_t r = 0; r < R; ++r) {
    GradMatchSums s{0, 0, 0};
    for (int64_t c = 0; c < chunks; ++c) {
      const GradMatchSums& q = partial[r * chunks + c];
      s.dot += q.dot;
      s.trial_sq += q.trial_sq;
      s.target_sq += q.target_sq;
    }
    plan[r] = grad_match_cosine_plan(s);
    loss[r] = static_cast<scalar_t>(plan[r].loss);
  }
  for_tiles([&](int64_t, int64_t row, int64_t begin, int64_t n) {
    const scalar_t* g1 = trial + row * P;
    scalar_t* out = grad + row * P;
    const GradMatchPlan pl = plan[row];
#pragma omp simd
    for (int64_t k = begin; k < begin + n; ++k) out[k] = grad_match_cosine_grad(g1[k], target[k], weight_at(w, k), pl);
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
    grad_match_impl<scalar_t>(trial.const_data_ptr<scalar_t>(), target.const_data_ptr<scalar_t>(),
                              weights.has_value() ? weights->const_data_ptr<scalar_t>() : nullptr, k, trial.size(0),
                              trial.size(1), loss.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>());
  });
  return {loss, grad};
}

}  // namespace i2f_fast::cpu
