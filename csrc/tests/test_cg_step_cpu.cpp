// ctest of the C++/OpenMP cg_step kernel against a scalar float64 loop (one CG iteration per row),
// over float32/float64, B ∈ {1, 3, 17}, D ∈ {1, 127, 4099}, with an inactive row and a
// breakdown row (pAp = 0). Exits non-zero with a message on the first mismatch.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "expect.h"
#include "i2f_fast/kernels.h"

namespace {

using i2f_fast_test::expect_close;

// One CG iteration per row in plain double loops: the oracle.
void oracle(at::Tensor x, at::Tensor r, at::Tensor p, const at::Tensor& Ap, at::Tensor rr, const at::Tensor& active,
            at::Tensor stepped) {
  const int64_t B = x.size(0), D = x.size(1);
  auto X = x.accessor<double, 2>(), R = r.accessor<double, 2>(), P = p.accessor<double, 2>();
  auto A = Ap.accessor<double, 2>();
  auto RR = rr.accessor<double, 1>();
  auto act = active.accessor<bool, 1>();
  auto st = stepped.accessor<bool, 1>();
  for (int64_t b = 0; b < B; ++b) {
    st[b] = false;
    if (!act[b]) continue;
    double pAp = 0;
    for (int64_t i = 0; i < D; ++i) pAp += P[b][i] * A[b][i];
    if (!std::isfinite(pAp) || pAp <= 0) continue;
    const double alpha = RR[b] / pAp;
    double rr_new = 0;
    for (int64_t i = 0; i < D; ++i) {
      X[b][i] += alpha * P[b][i];
      R[b][i] -= alpha * A[b][i];
      rr_new += R[b][i] * R[b][i];
    }
    const double beta = RR[b] > 0 ? rr_new / RR[b] : 0.0;
    for (int64_t i = 0; i < D; ++i) P[b][i] = R[b][i] + beta * P[b][i];
    RR[b] = rr_new;
    st[b] = true;
  }
}

void check(int64_t B, int64_t D, at::ScalarType dtype) {
  const std::string name = "B=" + std::to_string(B) + " D=" + std::to_string(D) + " " + c10::toString(dtype);
  at::manual_seed(B * 10007 + D);
  at::Tensor x = at::randn({B, D}, at::kDouble), r = at::randn({B, D}, at::kDouble), p = at::randn({B, D}, at::kDouble);
  at::Tensor Ap = p * at::rand({B, D}, at::kDouble) + 0.1 * p;
  at::Tensor active = at::ones({B}, at::kBool);
  if (B > 1) active[1] = false;
  if (B > 2) Ap[2].zero_();
  // Round the inputs to dtype first so that the kernel and the oracle see the same numbers.
  x = x.to(dtype).to(at::kDouble), r = r.to(dtype).to(at::kDouble), p = p.to(dtype).to(at::kDouble);
  Ap = Ap.to(dtype).to(at::kDouble);
  at::Tensor rr = (r * r).sum(1).to(dtype).to(at::kDouble);

  // Copies: .to() returns the same tensor when dtype is already double, and the kernel writes in place.
  at::Tensor kx = x.to(dtype).clone(), kr = r.to(dtype).clone(), kp = p.to(dtype).clone();
  auto [rr_new, stepped] = i2f_fast::cpu::cg_step(kx, kr, kp, Ap.to(dtype), rr.to(dtype), active);

  at::Tensor ostep = at::empty({B}, at::kBool);
  oracle(x, r, p, Ap, rr, active, ostep);
  if (!at::equal(stepped, ostep)) {
    i2f_fast_test::fail(name + ": stepped mask differs");
  }
  const double rtol = dtype == at::kDouble ? 1e-12 : 2e-5, atol = dtype == at::kDouble ? 1e-12 : 1e-5;
  expect_close(kx, x, rtol, atol, name + " x");
  expect_close(kr, r, rtol, atol, name + " r");
  expect_close(kp, p, rtol, atol, name + " p");
  expect_close(rr_new, rr, rtol, atol, name + " rr_new");
}

}  // namespace

int main() {
  for (auto dtype : {at::kFloat, at::kDouble})
    for (int64_t B : {1, 3, 17})
      for (int64_t D : {1, 127, 4099}) check(B, D, dtype);
  return i2f_fast_test::report("cg_step (C++/OpenMP)");
}
