// ctest of the engine's C++/OpenMP kernels (dual_act, ce_hvp, gram_apply) against the same
// formulas written with ATen ops in float64 (the Python references, i2f_fast/reference/, in C++):
// float32/float64, odd sizes, k = 1 and several, s/da absent, and gram_apply's direct loops and
// its GEMM form. Exits non-zero with a message on the first mismatch.
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "expect.h"
#include "i2f_fast/kernels.h"

namespace {

// The tolerance of dtype, with atol scaled by the largest expected magnitude.
void expect_close(const at::Tensor& got, const at::Tensor& want, at::ScalarType dtype, const std::string& what) {
  const double tol = dtype == at::kDouble ? 1e-12 : 1e-5;
  const double scale = std::max(1.0, want.numel() ? want.abs().max().item<double>() : 1.0);
  i2f_fast_test::expect_close(got, want, tol, tol * scale, what);
}

// Inputs rounded to dtype, as float64 (the oracle) and as dtype (the kernel).
at::Tensor rounded(at::Tensor t, at::ScalarType dtype) { return t.to(dtype).to(at::kDouble); }

void check_dual_act(at::ScalarType dtype, int64_t k) {
  const std::string name = std::string("dual_act ") + c10::toString(dtype) + " k=" + std::to_string(k);
  at::Tensor z = rounded(at::randn({5, 41}, at::kDouble) * 4, dtype);
  z.index_put_({0, 0}, 0.0);  // the kink
  at::Tensor da = rounded(at::randn({5, 41}, at::kDouble), dtype);
  at::Tensor t = rounded(at::randn({k, 5, 41}, at::kDouble), dtype), s = rounded(at::randn({k, 5, 41}, at::kDouble), dtype);
  // sigmoid, tanh, relu with the second term; tanh without it.
  const at::Tensor sg = at::sigmoid(z), th = at::tanh(z);
  const at::Tensor d1_sig = sg * (1 - sg), d2_sig = d1_sig * (1 - 2 * sg);
  const at::Tensor d1_tanh = 1 - th * th, d2_tanh = -2 * th * d1_tanh;
  const at::Tensor d1_relu = (z > 0).to(at::kDouble);
  expect_close(i2f_fast::cpu::dual_act(z.to(dtype), t.to(dtype), s.to(dtype), da.to(dtype), "sigmoid", 0.0, 20.0),
               d1_sig * t + d2_sig * da * s, dtype, name + " sigmoid");
  expect_close(i2f_fast::cpu::dual_act(z.to(dtype), t.to(dtype), s.to(dtype), da.to(dtype), "tanh", 0.0, 20.0),
               d1_tanh * t + d2_tanh * da * s, dtype, name + " tanh");
  expect_close(i2f_fast::cpu::dual_act(z.to(dtype), t.to(dtype), s.to(dtype), da.to(dtype), "relu", 0.0, 20.0),
               d1_relu * t, dtype, name + " relu");
  expect_close(i2f_fast::cpu::dual_act(z.to(dtype), t.to(dtype), std::nullopt, std::nullopt, "tanh", 0.0, 20.0),
               d1_tanh * t, dtype, name + " tanh (no s, da)");
}

void check_ce_hvp(at::ScalarType dtype, int64_t N, int64_t C, int64_t k) {
  const std::string name = std::string("ce_hvp ") + c10::toString(dtype) + " N=" + std::to_string(N) +
                           " C=" + std::to_string(C) + " k=" + std::to_string(k);
  at::Tensor p = rounded(at::softmax(at::randn({N, C}, at::kDouble) * 3, -1), dtype);
  at::Tensor u = rounded(at::randn({k, N, C}, at::kDouble), dtype);
  const at::Tensor pu = p * u;
  expect_close(i2f_fast::cpu::ce_hvp(p.to(dtype), u.to(dtype), 0.25), 0.25 * (pu - p * pu.sum(-1, true)), dtype, name);
}

void check_gram_apply(at::ScalarType dtype, int64_t K, int64_t G, int64_t S, int64_t I, int64_t O) {
  const std::string name = std::string("gram_apply ") + c10::toString(dtype) + " k=" + std::to_string(K) +
                           " G=" + std::to_string(G) + " S=" + std::to_string(S) + " I=" + std::to_string(I) +
                           " O=" + std::to_string(O);
  at::Tensor a = rounded(at::randn({G, S, I}, at::kDouble), dtype), e = rounded(at::randn({G, S, O}, at::kDouble), dtype);
  at::Tensor adot = rounded(at::randn({K, G, S, I}, at::kDouble), dtype);
  at::Tensor edot = rounded(at::randn({K, G, S, O}, at::kDouble), dtype);
  for (bool bias : {true, false}) {
    const at::Tensor gaa = at::matmul(a, a.transpose(-1, -2)) + (bias ? 1.0 : 0.0);
    const at::Tensor gee = at::matmul(e, e.transpose(-1, -2));
    const at::Tensor ua = at::matmul(gaa, edot) + at::matmul(at::matmul(adot, a.transpose(-1, -2)).transpose(-1, -2), e);
    const at::Tensor ute = at::matmul(at::matmul(edot, e.transpose(-1, -2)).transpose(-1, -2), a) + at::matmul(gee, adot);
    auto [got_ua, got_ute] = i2f_fast::cpu::gram_apply(a.to(dtype), e.to(dtype), adot.to(dtype), edot.to(dtype), bias);
    expect_close(got_ua, ua, dtype, name + (bias ? " bias" : "") + " ua");
    expect_close(got_ute, ute, dtype, name + (bias ? " bias" : "") + " ute");
  }
}

}  // namespace

int main() {
  at::manual_seed(0);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (int64_t k : {1, 3, 20}) check_dual_act(dtype, k);
    check_ce_hvp(dtype, 1, 10, 1);
    check_ce_hvp(dtype, 7, 1001, 3);
    check_gram_apply(dtype, 1, 1, 1, 13, 7);    // MLP layer, N = 1 (direct loops)
    check_gram_apply(dtype, 4, 3, 1, 9, 5);     // k tangents, per-sample mode
    check_gram_apply(dtype, 2, 1, 5, 11, 6);    // S = 5 (direct loops)
    check_gram_apply(dtype, 2, 1, 16, 70, 61);  // the GEMM form
  }
  return i2f_fast_test::report("dual_act, ce_hvp, gram_apply (C++/OpenMP)");
}
