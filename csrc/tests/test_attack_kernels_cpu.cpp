// ctest of the C++/OpenMP attack kernels (grad_match, tv, attack_step) against scalar float64
// loops: restarts 1 and 5, odd sizes, with and without weights / box, float32 and float64.
// Exits non-zero with a message on the first mismatch.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "expect.h"
#include "i2f_fast/kernels.h"

namespace {

using i2f_fast_test::expect_close;

double rtol_of(at::ScalarType t) { return t == at::kDouble ? 1e-10 : 1e-4; }

void check_grad_match(int64_t R, int64_t P, bool weighted, bool cosine, at::ScalarType dtype) {
  const std::string name = std::string("grad_match ") + (cosine ? "cosine" : "l2") + " R=" + std::to_string(R) +
                           " P=" + std::to_string(P) + (weighted ? " weighted " : " ") + c10::toString(dtype);
  at::manual_seed(R * 131 + P);
  const at::Tensor trial = at::randn({R, P}, at::kDouble).to(dtype), target = at::randn({P}, at::kDouble).to(dtype);
  const at::Tensor w = at::rand({P}, at::kDouble).to(dtype);
  auto [loss, grad] = i2f_fast::cpu::grad_match(trial, target, weighted ? std::optional<at::Tensor>(w) : std::nullopt,
                                                cosine ? "cosine" : "l2");
  at::Tensor want_loss = at::empty({R}, at::kDouble), want_grad = at::empty({R, P}, at::kDouble);
  const at::Tensor trial_d = trial.to(at::kDouble), target_d = target.to(at::kDouble), w_d = w.to(at::kDouble);
  auto T = trial_d.accessor<double, 2>();
  auto G = target_d.accessor<double, 1>();
  auto W = w_d.accessor<double, 1>();
  auto L = want_loss.accessor<double, 1>();
  auto D = want_grad.accessor<double, 2>();
  for (int64_t r = 0; r < R; ++r) {
    double dot = 0, tsq = 0, gsq = 0, l2 = 0;
    for (int64_t k = 0; k < P; ++k) {
      const double wk = weighted ? W[k] : 1.0;
      dot += wk * T[r][k] * G[k];
      tsq += wk * T[r][k] * T[r][k];
      gsq += wk * G[k] * G[k];
      l2 += wk * (T[r][k] - G[k]) * (T[r][k] - G[k]);
    }
    const double scale = 1.0 / std::sqrt(tsq * gsq);
    L[r] = cosine ? 1.0 - dot * scale : l2;
    for (int64_t k = 0; k < P; ++k) {
      const double wk = weighted ? W[k] : 1.0;
      D[r][k] = cosine ? -scale * wk * (G[k] - dot / tsq * T[r][k]) : 2 * wk * (T[r][k] - G[k]);
    }
  }
  expect_close(loss, want_loss, rtol_of(dtype), 1e-6, name + " loss");
  expect_close(grad, want_grad, rtol_of(dtype), 1e-6, name + " grad");
}

void check_tv(at::IntArrayRef shape, at::ScalarType dtype) {
  const std::string name = "tv " + std::to_string(shape[3]) + "x" + std::to_string(shape[4]) + " " + c10::toString(dtype);
  at::manual_seed(shape[3] * 7 + shape[4]);
  const at::Tensor x = at::randn(shape, at::kDouble).to(dtype);
  auto [value, grad] = i2f_fast::cpu::tv(x);
  const int64_t R = shape[0], planes = shape[1] * shape[2], H = shape[3], W = shape[4];
  const double cx = W > 1 ? double(planes * H * (W - 1)) : 1.0, cy = H > 1 ? double(planes * (H - 1) * W) : 1.0;
  at::Tensor want_value = at::zeros({R}, at::kDouble), want_grad = at::zeros(shape, at::kDouble);
  const at::Tensor xd = x.to(at::kDouble).reshape({R, planes, H, W});
  auto X = xd.accessor<double, 4>();
  auto V = want_value.accessor<double, 1>();
  const at::Tensor grad_view = want_grad.view({R, planes, H, W});
  auto Gr = grad_view.accessor<double, 4>();
  auto sgn = [](double d) { return double((d > 0) - (d < 0)); };
  for (int64_t r = 0; r < R; ++r)
    for (int64_t q = 0; q < planes; ++q)
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
          if (j + 1 < W) {
            const double d = X[r][q][i][j + 1] - X[r][q][i][j];
            V[r] += std::fabs(d) / cx;
            Gr[r][q][i][j + 1] += sgn(d) / cx;
            Gr[r][q][i][j] -= sgn(d) / cx;
          }
          if (i + 1 < H) {
            const double d = X[r][q][i + 1][j] - X[r][q][i][j];
            V[r] += std::fabs(d) / cy;
            Gr[r][q][i + 1][j] += sgn(d) / cy;
            Gr[r][q][i][j] -= sgn(d) / cy;
          }
        }
  expect_close(value, want_value, rtol_of(dtype), 1e-7, name + " value");
  expect_close(grad, want_grad, rtol_of(dtype), 1e-7, name + " grad");
}

void check_attack_step(int64_t R, bool sign, bool box, at::ScalarType dtype) {
  const std::string name = "attack_step R=" + std::to_string(R) + (sign ? " signed" : "") + (box ? " box " : " ") +
                           c10::toString(dtype);
  at::manual_seed(R + 17 * sign + 31 * box);
  const int64_t inner = 2 * 3 * 5 * 7;
  const at::Tensor x0 = at::randn({R, inner}, at::kDouble).to(dtype), g = at::randn({R, inner}, at::kDouble).to(dtype);
  const at::Tensor m0 = (0.1 * at::randn({R, inner}, at::kDouble)).to(dtype), v0 = at::rand({R, inner}, at::kDouble).to(dtype);
  const at::Tensor lr = at::linspace(0.05, 0.2, R, at::kDouble).to(dtype);
  const at::Tensor bc1 = at::full({1}, 1 - std::pow(0.9, 3), at::kDouble).to(dtype);
  const at::Tensor bc2 = at::full({1}, 1 - std::pow(0.999, 3), at::kDouble).to(dtype);
  const at::Tensor lower = at::full({inner}, -0.3, at::kDouble).to(dtype), upper = at::full({inner}, 0.4, at::kDouble).to(dtype);
  at::Tensor x = x0.clone(), m = m0.clone(), v = v0.clone();
  i2f_fast::cpu::attack_step(x, g, m, v, lr, bc1, bc2, 0.9, 0.999, 1e-8, sign,
                             box ? std::optional<at::Tensor>(lower) : std::nullopt,
                             box ? std::optional<at::Tensor>(upper) : std::nullopt);
  at::Tensor wx = x0.to(at::kDouble).clone(), wm = m0.to(at::kDouble).clone(), wv = v0.to(at::kDouble).clone();
  auto X = wx.accessor<double, 2>(), M = wm.accessor<double, 2>(), V = wv.accessor<double, 2>();
  const at::Tensor g_d = g.to(at::kDouble);
  auto Gd = g_d.accessor<double, 2>();
  const at::Tensor lrd = lr.to(at::kDouble);
  const double b1 = bc1.to(at::kDouble).item<double>(), b2 = bc2.to(at::kDouble).item<double>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < inner; ++k) {
      const double u = sign ? double((Gd[r][k] > 0) - (Gd[r][k] < 0)) : Gd[r][k];
      M[r][k] = 0.9 * M[r][k] + 0.1 * u;
      V[r][k] = 0.999 * V[r][k] + 0.001 * u * u;
      X[r][k] -= lrd[r].item<double>() / b1 * M[r][k] / (std::sqrt(V[r][k]) / std::sqrt(b2) + 1e-8);
      if (box) X[r][k] = std::min(std::max(X[r][k], -0.3), 0.4);
    }
  const double rtol = rtol_of(dtype), atol = dtype == at::kDouble ? 1e-10 : 1e-5;
  expect_close(x, wx, rtol, atol, name + " x");
  expect_close(m, wm, rtol, atol, name + " exp_avg");
  expect_close(v, wv, rtol, atol, name + " exp_avg_sq");
}

}  // namespace

int main() {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (int64_t R : {1, 5}) {
      for (int64_t P : {1, 4099, 9001})
        for (bool weighted : {false, true})
          for (bool cosine : {false, true}) check_grad_match(R, P, weighted, cosine, dtype);
      for (bool sign : {false, true})
        for (bool box : {false, true}) check_attack_step(R, sign, box, dtype);
    }
    for (auto shape : {std::vector<int64_t>{1, 1, 1, 5, 7}, {5, 2, 3, 9, 13}, {2, 1, 1, 1, 6}, {1, 2, 1, 33, 1}})
      check_tv(shape, dtype);
  }
  return i2f_fast_test::report("grad_match, tv, attack_step (C++/OpenMP)");
}
