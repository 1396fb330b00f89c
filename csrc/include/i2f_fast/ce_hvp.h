// Per-row math of the softmax-cross-entropy Hessian-vector product (i2f_fast::ce_hvp), shared by
// the C++/OpenMP kernel (csrc/cpu/ce_hvp_cpu.cpp) and the CUDA kernel (csrc/cuda/ce_hvp_cuda.cu).
//
// Per row r of u (rows of all leading dims flattened; row r uses p's row r mod N):
//   d = Σ_c p_c u_c   (accumulated in double)
//   out_c = scale · (p_c u_c − p_c d)
// which is the reference's `scale · (p⊙u − p (p·u))` (i2f_fast/reference/ce_hvp.py) in one read
// of the row for the dot and one read + write for the output.
#pragma once

#include "i2f_fast/host_device.h"

namespace i2f_fast {

template <typename T>
I2F_FAST_HD T ce_hvp_element(T p, T u, T dot, T scale) {
  const T pu = p * u;
  return scale * (pu - p * dot);
}

}  // namespace i2f_fast
