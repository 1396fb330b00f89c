// Argument checks shared by the CPU and CUDA kernels. Error messages name the argument, like the
// Python-level checks in i2f_fast/ops/.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace i2f_fast {

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
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have dtype ", like.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.device().type() == device && t.device() == like.device(), op, ": ", name, " must be on ",
              like.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (the Python wrapper copies)");
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

}  // namespace i2f_fast
