// Declarations of the compiled kernels, one line per op and device. Registered with the
// dispatcher in csrc/ops_cpu.cpp and csrc/ops_cuda.cpp; callable directly from C++.
#pragma once

#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

namespace i2f_fast {

namespace cpu {
// i2f_fast::cg_step on CPU tensors. x, r, p (B, D) are updated in place; Ap (B, D), rr (B,),
// active (B,) bool. Returns (rr_new (B,), stepped (B,) bool). Contiguous float32/float64 only.
std::tuple<at::Tensor, at::Tensor> cg_step(at::Tensor& x, at::Tensor& r, at::Tensor& p, const at::Tensor& Ap,
                                           const at::Tensor& rr, const at::Tensor& active);

// i2f_fast::grad_match on CPU tensors: trial (R, P), target (P,), optional weights (P,), kind
// "cosine" or "l2". Returns (loss (R,), grad = ∂loss/∂trial (R, P)). Contiguous float32/float64.
std::tuple<at::Tensor, at::Tensor> grad_match(const at::Tensor& trial, const at::Tensor& target,
                                              const std::optional<at::Tensor>& weights, c10::string_view kind);

// i2f_fast::tv on CPU tensors: x (R, N, C, H, W). Returns (value (R,), grad shaped like x).
std::tuple<at::Tensor, at::Tensor> tv(const at::Tensor& x);

// i2f_fast::attack_step on CPU tensors: x, exp_avg, exp_avg_sq (R, ...) updated in place from
// grad (R, ...); lr (1 or R elements), bias corrections (1 element), optional box bounds with the
// x.shape[1:] elements of one restart.
void attack_step(at::Tensor& x, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                 const at::Tensor& lr, const at::Tensor& bias_correction1, const at::Tensor& bias_correction2,
                 double beta1, double beta2, double eps, bool sign, const std::optional<at::Tensor>& lower,
                 const std::optional<at::Tensor>& upper);
}  // namespace cpu

namespace cuda {
// i2f_fast::cg_step on CUDA tensors; same contract as cpu::cg_step, no host synchronisation.
std::tuple<at::Tensor, at::Tensor> cg_step(at::Tensor& x, at::Tensor& r, at::Tensor& p, const at::Tensor& Ap,
                                           const at::Tensor& rr, const at::Tensor& active);

// i2f_fast::grad_match, tv and attack_step on CUDA tensors; same contracts as the cpu:: kernels,
// no host synchronisation (the Adam scalars are read on the device).
std::tuple<at::Tensor, at::Tensor> grad_match(const at::Tensor& trial, const at::Tensor& target,
                                              const std::optional<at::Tensor>& weights, c10::string_view kind);
std::tuple<at::Tensor, at::Tensor> tv(const at::Tensor& x);
void attack_step(at::Tensor& x, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                 const at::Tensor& lr, const at::Tensor& bias_correction1, const at::Tensor& bias_correction2,
                 double beta1, double beta2, double eps, bool sign, const std::optional<at::Tensor>& lower,
                 const std::optional<at::Tensor>& upper);
}  // namespace cuda

// The structured engine's kernels (ENGINE.md), contiguous float32/float64 inputs of one dtype.
// dual_act: z (*M), t (*L, *M), optional s (*L, *M) and da (*M) → σ'(z)⊙t + σ''(z)⊙da⊙s, (*L, *M).
// ce_hvp: p (N, C), u (*L, N, C) → scale·(p⊙u − p (p·u)) per row, (*L, N, C).
// gram_apply: a (G, S, I), e (G, S, O), adot (k, G, S, I), edot (k, G, S, O) →
//   (U a + u_b (k, G, S, O), Uᵀ e (k, G, S, I)) with U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ per group.
namespace cpu {
at::Tensor dual_act(const at::Tensor& z, const at::Tensor& t, const std::optional<at::Tensor>& s,
                    const std::optional<at::Tensor>& da, c10::string_view act, double alpha, double threshold);
at::Tensor ce_hvp(const at::Tensor& p, const at::Tensor& u, double scale);
std::tuple<at::Tensor, at::Tensor> gram_apply(const at::Tensor& a, const at::Tensor& e, const at::Tensor& adot,
                                              const at::Tensor& edot, bool bias);
}  // namespace cpu

namespace cuda {
at::Tensor dual_act(const at::Tensor& z, const at::Tensor& t, const std::optional<at::Tensor>& s,
                    const std::optional<at::Tensor>& da, c10::string_view act, double alpha, double threshold);
at::Tensor ce_hvp(const at::Tensor& p, const at::Tensor& u, double scale);
std::tuple<at::Tensor, at::Tensor> gram_apply(const at::Tensor& a, const at::Tensor& e, const at::Tensor& adot,
                                              const at::Tensor& edot, bool bias);
}  // namespace cuda

}  // namespace i2f_fast
