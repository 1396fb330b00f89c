// Declarations of the compiled kernels, one line per op and device. Registered with the
// dispatcher in csrc/ops_cpu.cpp and csrc/ops_cuda.cpp; callable directly from C++.
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

namespace i2f_fast {

namespace cpu {
// i2f_fast::cg_step on CPU tensors. x, r, p (B, D) are updated in place; Ap (B, D), rr (B,),
// active (B,) bool. Returns (rr_new (B,), stepped (B,) bool). Contiguous float32/float64 only.
std::tuple<at::Tensor, at::Tensor> cg_step(at::Tensor& x, at::Tensor& r, at::Tensor& p, const at::Tensor& Ap,
                                           const at::Tensor& rr, const at::Tensor& active);
}  // namespace cpu

namespace cuda {
// i2f_fast::cg_step on CUDA tensors; same contract as cpu::cg_step, no host synchronisation.
std::tuple<at::Tensor, at::Tensor> cg_step(at::Tensor& x, at::Tensor& r, at::Tensor& p, const at::Tensor& Ap,
                                           const at::Tensor& rr, const at::Tensor& active);
}  // namespace cuda

}  // namespace i2f_fast
