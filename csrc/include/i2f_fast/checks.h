// Argument checks shared by the CPU and CUDA kernels. Error messages name the argument, like the
// Python-level checks in i2f_fast/ops/.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

#include "i2f_fast/grad_match.h"

namespace i2f_fast {

// dtype (as like's), device and contiguity of one tensor argument of op.
inline void check_float_tensor(const at::Tensor& t, const char* op, const char* name, const at::Tensor& like,
                               c10::DeviceType device) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have dtype ", like.scalar_type());
  TORCH_CHECK(t.device().type() == device && t.device() == like.device(), op, ": ", name, " must be on ",
              like.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (the Python wrapper copies)");
}

inline void check_cg_step_args(const at::Tensor& x, const at::Tensor& r, const at::Tensor& p, const at::Tensor& Ap,
                               const at::Tensor& rr, const at::Tensor& active, c10::DeviceType device) {
  TORCH_CHECK(x.dim() == 2, "cg_step: x must be a 2-D tensor (B, D), got ", x.dim(), " dimensions");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "cg_step: x must be float32 or float64, got ", x.scalar_type());
  const std::pair<const char*, const at::Tensor*> mats[] = {{"x", &x}, {"r", &r}, {"p", &p}, {"Ap", &Ap}};
  for (const auto& [name, t] : mats) {
    TORCH_CHECK(t->sizes() == x.sizes(), "cg_step: ", name, " has shape ", t->sizes(), ", expected ", x.sizes());
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "cg_step: ", name, " must have dtype ", x.scalar_type());
    TORCH_CHECK(t->device().type() == device && t->device() == x.device(), "cg_step: ", name, " must be on ",
                x.device());
    TORCH_CHECK(t->is_contiguous(), "cg_step: ", name, " must be contiguous (the Python wrapper copies)");
  }
  TORCH_CHECK(rr.dim() == 1 && rr.size(0) == x.size(0) && rr.scalar_type() == x.scalar_type() &&
                  rr.device() == x.device(),
              "cg_step: rr must be a (", x.size(0), ",) tensor of x's dtype on x's device");
  TORCH_CHECK(active.dim() == 1 && active.size(0) == x.size(0) && active.scalar_type() == at::kBool &&
                  active.device() == x.device(),
              "cg_step: active must be a (", x.size(0), ",) bool tensor on x's device");
}

// --- the structured engine's kernels (dual_act, ce_hvp, gram_apply) ---

inline void check_engine_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like,
                                c10::DeviceType device) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
  check_float_tensor(t, op, name, like, device);
}

inline void check_dual_act_args(const at::Tensor& z, const at::Tensor& t, const std::optional<at::Tensor>& s,
                                const std::optional<at::Tensor>& da, int act, c10::DeviceType device) {
  TORCH_CHECK(act >= 0, "dual_act: act must be one of sigmoid, tanh, relu, leaky_relu, elu, gelu, gelu_tanh, "
                        "silu, softplus");
  check_engine_tensor("dual_act", "z", z, z, device);
  check_engine_tensor("dual_act", "t", t, z, device);
  TORCH_CHECK(t.dim() >= z.dim() && t.sizes().slice(t.dim() - z.dim()) == z.sizes(),
              "dual_act: t must end with z's shape ", z.sizes(), ", got ", t.sizes());
  TORCH_CHECK(s.has_value() == da.has_value(), "dual_act: s and da must be given together (or neither)");
  if (s.has_value()) {
    check_engine_tensor("dual_act", "s", *s, z, device);
    check_engine_tensor("dual_act", "da", *da, z, device);
    TORCH_CHECK(s->sizes() == t.sizes(), "dual_act: s must have t's shape ", t.sizes(), ", got ", s->sizes());
    TORCH_CHECK(da->sizes() == z.sizes(), "dual_act: da must have z's shape ", z.sizes(), ", got ", da->sizes());
  }
}

inline void check_ce_hvp_args(const at::Tensor& p, const at::Tensor& u, c10::DeviceType device) {
  check_engine_tensor("ce_hvp", "p", p, p, device);
  check_engine_tensor("ce_hvp", "u", u, p, device);
  TORCH_CHECK(p.dim() == 2, "ce_hvp: p must be a 2-D tensor (N, C), got ", p.dim(), " dimensions");
  TORCH_CHECK(u.dim() >= 2 && u.sizes().slice(u.dim() - 2) == p.sizes(), "ce_hvp: u must end with p's shape ",
              p.sizes(), ", got ", u.sizes());
}

inline void check_gram_apply_args(const at::Tensor& a, const at::Tensor& e, const at::Tensor& adot,
                                  const at::Tensor& edot, c10::DeviceType device) {
  check_engine_tensor("gram_apply", "a", a, a, device);
  check_engine_tensor("gram_apply", "e", e, a, device);
  check_engine_tensor("gram_apply", "adot", adot, a, device);
  check_engine_tensor("gram_apply", "edot", edot, a, device);
  TORCH_CHECK(a.dim() == 3, "gram_apply: a must be a 3-D tensor (G, S, I), got ", a.dim(), " dimensions");
  TORCH_CHECK(e.dim() == 3 && e.size(0) == a.size(0) && e.size(1) == a.size(1),
              "gram_apply: e must be (G, S, O) with a's G and S, got ", e.sizes());
  TORCH_CHECK(adot.dim() == 4 && adot.sizes().slice(1) == a.sizes(), "gram_apply: adot must be (k, ", a.sizes(),
              "), got ", adot.sizes());
  TORCH_CHECK(edot.dim() == 4 && edot.size(0) == adot.size(0) && edot.sizes().slice(1) == e.sizes(),
              "gram_apply: edot must be (k, ", e.sizes(), ") with adot's k, got ", edot.sizes());
}

inline void check_grad_match_args(const at::Tensor& trial, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weights, c10::DeviceType device) {
  TORCH_CHECK(trial.dim() == 2, "grad_match: trial must be a 2-D tensor (R, P), got ", trial.dim(), " dimensions");
  TORCH_CHECK(trial.scalar_type() == at::kFloat || trial.scalar_type() == at::kDouble,
              "grad_match: trial must be float32 or float64, got ", trial.scalar_type());
  check_float_tensor(trial, "grad_match", "trial", trial, device);
  TORCH_CHECK(target.dim() == 1 && target.size(0) == trial.size(1), "grad_match: target must have shape (",
              trial.size(1), ",), got ", target.sizes());
  check_float_tensor(target, "grad_match", "target", trial, device);
  if (weights.has_value()) {
    TORCH_CHECK(weights->dim() == 1 && weights->size(0) == trial.size(1), "grad_match: weights must have shape (",
                trial.size(1), ",), got ", weights->sizes());
    check_float_tensor(*weights, "grad_match", "weights", trial, device);
  }
}

inline MatchKind parse_match_kind(c10::string_view kind) {
  if (kind == "cosine") return MatchKind::kCosine;
  TORCH_CHECK(kind == "l2", "grad_match: kind must be 'cosine' or 'l2', got '", std::string(kind), "'");
  return MatchKind::kL2;
}

inline void check_tv_args(const at::Tensor& x, c10::DeviceType device) {
  TORCH_CHECK(x.dim() == 5, "tv: x must be a 5-D tensor (R, N, C, H, W), got ", x.dim(), " dimensions");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "tv: x must be float32 or float64, got ", x.scalar_type());
  check_float_tensor(x, "tv", "x", x, device);
}

inline void check_attack_step_args(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& exp_avg,
                                   const at::Tensor& exp_avg_sq, const at::Tensor& lr, const at::Tensor& bc1,
                                   const at::Tensor& bc2, const std::optional<at::Tensor>& lower,
                                   const std::optional<at::Tensor>& upper, c10::DeviceType device) {
  TORCH_CHECK(x.dim() >= 1, "attack_step: x must have a leading restart dimension (R, ...)");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "attack_step: x must be float32 or float64, got ", x.scalar_type());
  const std::pair<const char*, const at::Tensor*> same[] = {
      {"x", &x}, {"grad", &grad}, {"exp_avg", &exp_avg}, {"exp_avg_sq", &exp_avg_sq}};
  for (const auto& [name, t] : same) {
    TORCH_CHECK(t->sizes() == x.sizes(), "attack_step: ", name, " has shape ", t->sizes(), ", expected ", x.sizes());
    check_float_tensor(*t, "attack_step", name, x, device);
  }
  const int64_t rows = x.size(0);
  TORCH_CHECK(lr.numel() == 1 || lr.numel() == rows, "attack_step: lr must have 1 or ", rows, " elements, got ",
              lr.numel());
  check_float_tensor(lr, "attack_step", "lr", x, device);
  TORCH_CHECK(bc1.numel() == 1, "attack_step: bias_correction1 must have one element");
  check_float_tensor(bc1, "attack_step", "bias_correction1", x, device);
  TORCH_CHECK(bc2.numel() == 1, "attack_step: bias_correction2 must have one element");
  check_float_tensor(bc2, "attack_step", "bias_correction2", x, device);
  const int64_t inner = rows == 0 ? 0 : x.numel() / rows;
  const std::pair<const char*, const std::optional<at::Tensor>*> bounds[] = {{"lower", &lower}, {"upper", &upper}};
  for (const auto& [name, t] : bounds) {
    if (!t->has_value()) continue;
    TORCH_CHECK((*t)->numel() == inner, "attack_step: ", name, " must have the ", inner,
                " elements of one restart (shape x.shape[1:]), got ", (*t)->numel());
    check_float_tensor(**t, "attack_step", name, x, device);
  }
}

}  // namespace i2f_fast
