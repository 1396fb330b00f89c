// C++/OpenMP kernel of i2f_fast::gram_apply: (U a + u_b, Uᵀ e) for U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ in
// every (tangent k, group g) program, without forming U.
//
// Algorithm: include/i2f_fast/gram_apply.h (phase 1: four S×S Grams; phase 2: their application).
// Work mapping: both phases run over the k·G·S (program, row) pairs with at::parallel_for
// (OpenMP): phase 1 item (p, n) computes row n of the four Grams of program p (4·S dot products,
// accumulated in double for float64 and float32 for float32); phase 2 item (p, m) writes output
// rows m of ua and ute as sums of S scaled rows each. Both phases write disjoint slots, so the
// results do not depend on the thread count. The Grams live in one workspace (k·G·4·S² numbers).
// Large S switches to BLAS GEMMs (gram_apply_gemm below).
// Why fused: the reference runs six batched GEMMs (two Grams shared by the k tangents), an add
// and two transposes; for the engine's small S (1 per sample, N, N·tokens) these are
// overhead-bound, and at S = 1 everything reduces to four dot products and four axpys.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>

#include <vector>

#include "i2f_fast/checks.h"
#include "i2f_fast/gram_apply.h"
#include "i2f_fast/kernels.h"

namespace i2f_fast::cpu {
namespace {

// Multiply-adds per parallel task, at least: smaller calls run on the calling thread (with
// 32768, G = 1, S = 1, k = 16 went parallel and took 0.1 ms with 2 threads instead of 20 µs).
constexpr int64_t kGrainFlops = 1 << 16;

template <typename acc_t, typename T>
acc_t dot(const T* x, const T* y, int64_t n) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += static_cast<acc_t>(x[i]) * static_cast<acc_t>(y[i]);
  return s;
}

template <typename T, typename acc_t>
void axpy(T* out, acc_t c, const T* x, int64_t n) {
  const T cc = static_cast<T>(c);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] += cc * x[i];
}

template <typename T>
void gram_apply_impl(const T* a, const T* e, const T* adot, const T* edot, T* ua, T* ute, int64_t K, int64_t G,
                     int64_t S, int64_t I, int64_t O, bool bias) {
  using acc_t = T;  // float32 Grams in float32 (allowed by the op's contract), float64 in double
  const int64_t programs = K * G, items = programs * S;
  std::vector<acc_t> coef(programs * gram_coef_count(S));
  const int64_t grain = std::max<int64_t>(1, kGrainFlops / std::max<int64_t>(1, 2 * S * (I + O)));

  // Phase 1: row n of the four Grams of program p = k·G + g.
  at::parallel_for(0, items, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t p = item / S, n = item % S, g = p % G;
      const T* a_g = a + g * S * I;
      const T* e_g = e + g * S * O;
      const T* an = a_g + n * I;
      const T* en = e_g + n * O;
      const T* adn = adot + (p * S + n) * I;
      const T* edn = edot + (p * S + n) * O;
      acc_t* c = coef.data() + p * gram_coef_count(S);
      for (int64_t m = 0; m < S; ++m) {
        const T* am = a_g + m * I;
        const T* em = e_g + m * O;
        c[gram_coef_index(0, n, m, S)] = dot<acc_t>(an, am, I) + (bias ? acc_t(1) : acc_t(0));
        c[gram_coef_index(1, n, m, S)] = dot<acc_t>(adn, am, I);
        c[gram_coef_index(2, n, m, S)] = dot<acc_t>(edn, em, O);
        c[gram_coef_index(3, n, m, S)] = dot<acc_t>(en, em, O);
      }
    }
  });

  // Phase 2: output row m of program p.
  at::parallel_for(0, items, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t p = item / S, m = item % S, g = p % G;
      const acc_t* c = coef.data() + p * gram_coef_count(S);
      T* ua_m = ua + (p * S + m) * O;
      T* ute_m = ute + (p * S + m) * I;
      std::fill(ua_m, ua_m + O, T(0));
      std::fill(ute_m, ute_m + I, T(0));
      for (int64_t n = 0; n < S; ++n) {
        axpy(ua_m, c[gram_coef_index(0, n, m, S)], edot + (p * S + n) * O, O);
        axpy(ua_m, c[gram_coef_index(1, n, m, S)], e + (g * S + n) * O, O);
        axpy(ute_m, c[gram_coef_index(2, n, m, S)], a + (g * S + n) * I, I);
        axpy(ute_m, c[gram_coef_index(3, n, m, S)], adot + (p * S + n) * I, I);
      }
    }
  });
}

// Large Grams (S >= kGemmMinRows and kGemmMinWork multiply-adds or more): the same contractions
// as four BLAS GEMMs for the Grams (a·a and e·e once per group, shared by the k tangents) and two
// for their application, each pair of terms merged into one GEMM of inner size 2S:
//   ua  = [a aᵀ + bias | a ȧᵀ] · [ė ; e]        ute = [e ėᵀ | e eᵀ] · [a ; ȧ]
// (rows m, columns n of the Grams). The direct loops run at a few GFLOP/s; BLAS at tens, so the
// GEMM form wins as soon as the work hides its ~6 extra ATen calls
// (benchmarks/bench_engine_kernels.py: G = 1, S = 64, I = O = 256 took 1.0 ms in the direct loops
// against 0.18 ms for the reference's batched GEMMs).
constexpr int64_t kGemmMinRows = 8;
constexpr int64_t kGemmMinWork = 1 << 18;

std::tuple<at::Tensor, at::Tensor> gram_apply_gemm(const at::Tensor& a, const at::Tensor& e, const at::Tensor& adot,
                                                   const at::Tensor& edot, bool bias) {
  const int64_t K = adot.size(0), G = a.size(0), S = a.size(1), I = a.size(2), O = e.size(2);
  at::Tensor gaa = at::matmul(a, a.transpose(-1, -2));  // (G, S, S)
  if (bias) gaa.add_(1);
  const at::Tensor gee = at::matmul(e, e.transpose(-1, -2));
  const at::Tensor ga_adot = at::matmul(a, adot.transpose(-1, -2));  // (K, G, S, S): [m, n] = a_m·ȧ_n
  const at::Tensor ge_edot = at::matmul(e, edot.transpose(-1, -2));  // [m, n] = e_m·ė_n
  at::Tensor ua = at::matmul(at::cat({gaa.expand({K, G, S, S}), ga_adot}, -1),
                             at::cat({edot, e.expand({K, G, S, O})}, -2));
  at::Tensor ute = at::matmul(at::cat({ge_edot, gee.expand({K, G, S, S})}, -1),
                              at::cat({a.expand({K, G, S, I}), adot}, -2));
  return {ua.contiguous(), ute.contiguous()};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gram_apply(const at::Tensor& a, const at::Tensor& e, const at::Tensor& adot,
                                              const at::Tensor& edot, bool bias) {
  check_gram_apply_args(a, e, adot, edot, c10::DeviceType::CPU);
  const int64_t K = adot.size(0), G = a.size(0), S = a.size(1), I = a.size(2), O = e.size(2);
  at::Tensor ua = at::empty({K, G, S, O}, a.options());
  at::Tensor ute = at::empty({K, G, S, I}, a.options());
  if (K * G * S == 0) return {ua, ute};
  if (S >= kGemmMinRows && 4 * K * G * S * S * (I + O) >= kGemmMinWork) return gram_apply_gemm(a, e, adot, edot, bias);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "i2f_fast::gram_apply (cpu)", [&] {
    gram_apply_impl<scalar_t>(a.const_data_ptr<scalar_t>(), e.const_data_ptr<scalar_t>(),
                              adot.const_data_ptr<scalar_t>(), edot.const_data_ptr<scalar_t>(),
                              ua.data_ptr<scalar_t>(), ute.data_ptr<scalar_t>(), K, G, S, I, O, bias);
  });
  return {ua, ute};
}

}  // namespace i2f_fast::cpu
