// Argument checks shared by the CPU and CUDA kernels. Error messages name the argument, like the
// Python-level checks in i2f_fast/ops/.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

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

}  // namespace i2f_fast
