// C++/OpenMP kernel of i2f_fast::dual_act: σ'(z)⊙t + σ''(z)⊙da⊙s for every activation of the
// engine, batched over the leading dims L of t and s (k tangents share z and da).
//
// Algorithm: include/i2f_fast/dual_act.h (the reference's derivative formulas). Work mapping: t
// is viewed as (L, M) with M = numel(z); the (L, M) plane is cut into tiles of kChunk columns ×
// kRows rows, spread over threads with at::parallel_for (OpenMP). A tile evaluates σ' and σ''·da
// once for its kChunk columns (into a stack buffer) and applies them to its kRows rows, so k
// tangents pay the transcendental functions once, not k times. The activation is a template
// argument: the switch of act_derivatives folds away and the loops vectorise.
// Why fused: the reference runs 5–10 small torch ops (σ, products, where) plus temporaries.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include "i2f_fast/checks.h"
#include "i2f_fast/dual_act.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

constexpr int64_t kChunk = 512;  // columns per tile (two stack buffers of kChunk scalars)
constexpr int64_t kRows = 16;    // rows (leading-dim entries) per tile
// Parallel tasks hold at least this many output elements (ATen's own grain for elementwise
// ops): smaller calls run on the calling thread. With 2 threads on this shared 2-core machine, a
// LeNet-sized call split over threads took 5 ms instead of 17 µs (bench_engine_kernels.py).
constexpr int64_t kGrainElements = 32768;

template <typename T, int ACT, bool SECOND>
void dual_act_impl(const T* z, const T* t, const T* s, const T* da, T* out, int64_t L, int64_t M, T alpha,
                   T threshold) {
  const int64_t col_tiles = (M + kChunk - 1) / kChunk;
  const int64_t row_tiles = (L + kRows - 1) / kRows;
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (std::min(kChunk, M) * std::min(kRows, L)));
  at::parallel_for(0, col_tiles * row_tiles, grain, [&](int64_t t0, int64_t t1) {
    T d1[kChunk], d2da[kChunk];
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t j0 = (tile % col_tiles) * kChunk, n = std::min(kChunk, M - j0);
      const int64_t l0 = (tile / col_tiles) * kRows, l1 = std::min(L, l0 + kRows);
      for (int64_t j = 0; j < n; ++j) {
        T a, b;
        act_derivatives<T>(ACT, z[j0 + j], alpha, threshold, a, b);
        d1[j] = a;
        d2da[j] = SECOND ? b * da[j0 + j] : T(0);
      }
      for (int64_t l = l0; l < l1; ++l) {
        const int64_t base = l * M + j0;
        const T* tp = t + base;
        T* op = out + base;
        if constexpr (SECOND) {
          const T* sp = s + base;
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) op[j] = d1[j] * tp[j] + d2da[j] * sp[j];
        } else {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) op[j] = d1[j] * tp[j];
        }
      }
    }
  });
}

template <typename T, int ACT>
void dispatch_second(const T* z, const T* t, const T* s, const T* da, T* out, int64_t L, int64_t M, T alpha,
                     T threshold) {
  if (s != nullptr)
    dual_act_impl<T, ACT, true>(z, t, s, da, out, L, M, alpha, threshold);
  else
    dual_act_impl<T, ACT, false>(z, t, s, da, out, L, M, alpha, threshold);
}

template <typename T>
void dispatch_act(int act, const T* z, const T* t, const T* s, const T* da, T* out, int64_t L, int64_t M, T alpha,
                  T threshold) {
  switch (act) {
#define I2F_FAST_ACT_CASE(code) \
  case code:                    \
    return dispatch_second<T, code>(z, t, s, da, out, L, M, alpha, threshold);
    I2F_FAST_ACT_CASE(kActSigmoid)
    I2F_FAST_ACT_CASE(kActTanh)
    I2F_FAST_ACT_CASE(kActRelu)
    I2F_FAST_ACT_CASE(kActLeakyRelu)
    I2F_FAST_ACT_CASE(kActElu)
    I2F_FAST_ACT_CASE(kActGelu)
    I2F_FAST_ACT_CASE(kActGeluTanh)
    I2F_FAST_ACT_CASE(kActSilu)
    I2F_FAST_ACT_CASE(kActSoftplus)
#undef I2F_FAST_ACT_CASE
    default:
      TORCH_CHECK(false, "dual_act: unknown activation code ", act);
  }
}

}  // namespace

at::Tensor dual_act(const at::Tensor& z, const at::Tensor& t, const std::optional<at::Tensor>& s,
                    const std::optional<at::Tensor>& da, c10::string_view act, double alpha, double threshold) {
  const int code = act_code(act);
  check_dual_act_args(z, t, s, da, code, c10::DeviceType::CPU);
  at::Tensor out = at::empty_like(t);
  const int64_t M = z.numel();
  if (M == 0 || t.numel() == 0) return out;
  const int64_t L = t.numel() / M;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "i2f_fast::dual_act (cpu)", [&] {
    dispatch_act<scalar_t>(code, z.const_data_ptr<scalar_t>(), t.const_data_ptr<scalar_t>(),
                           s.has_value() ? s->const_data_ptr<scalar_t>() : nullptr,
                           da.has_value() ? da->const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), L, M,
                           static_cast<scalar_t>(alpha), static_cast<scalar_t>(threshold));
  });
  return out;
}

}  // namespace i2f_fast::cpu
