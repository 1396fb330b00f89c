// Per-element math of the fused anisotropic total variation, shared by the C++/OpenMP kernel
// (csrc/cpu/tv_cpu.cpp) and the CUDA kernel (csrc/cuda/tv_cuda.cu).
//
// For R restarts of an (N, C, H, W) batch (reference: i2f_fast/reference/tv.py):
//   TV_r = Σ|x[i,j+1] − x[i,j]| / (N·C·H·(W−1)) + Σ|x[i+1,j] − x[i,j]| / (N·C·(H−1)·W),
// a side of length 1 contributing 0. Element (i, j) of the gradient is a gather, not a scatter:
//   ∂TV/∂x[i,j] = (s(x[i,j]−x[i,j−1]) − s(x[i,j+1]−x[i,j])) / cx + (s(x[i,j]−x[i−1,j]) − s(x[i+1,j]−x[i,j])) / cy
// with s = sign (0 at 0) and missing neighbours dropped, so every element is computed
// independently from its four neighbours (no atomics). The value sums each difference once: the
// element adds |x[i,j]−x[i,j−1]| and |x[i,j]−x[i−1,j]| (its left and upper differences).
#pragma once

#include <cmath>
#include <cstdint>

#include "i2f_fast/cg_step.h"  // I2F_FAST_HD

namespace i2f_fast {

template <typename T>
I2F_FAST_HD T sign_of(T v) {
  return static_cast<T>((v > T(0)) - (v < T(0)));
}

// Gradient of element (i, j) of one H×W plane at `plane` (row-major), and its value contribution
// |left difference| · inv_cx + |upper difference| · inv_cy (double).
template <typename scalar_t>
I2F_FAST_HD scalar_t tv_element(const scalar_t* plane, int64_t i, int64_t j, int64_t H, int64_t W, scalar_t inv_cx,
                                scalar_t inv_cy, double& value) {
  const int64_t k = i * W + j;
  const scalar_t c = plane[k];
  scalar_t gx = 0, gy = 0;
  if (j > 0) {
    const scalar_t d = c - plane[k - 1];
    gx += sign_of(d);
    value += std::fabs(static_cast<double>(d)) * static_cast<double>(inv_cx);
  }
  if (j + 1 < W) gx -= sign_of(plane[k + 1] - c);
  if (i > 0) {
    const scalar_t d = c - plane[k - W];
    gy += sign_of(d);
    value += std::fabs(static_cast<double>(d)) * static_cast<double>(inv_cy);
  }
  if (i + 1 < H) gy -= sign_of(plane[k + W] - c);
  return gx * inv_cx + gy * inv_cy;
}

}  // namespace i2f_fast
