// Layout and per-element math of the engine's Gram contractions (i2f_fast::gram_apply), shared by
// the C++/OpenMP kernel (csrc/cpu/gram_apply_cpu.cpp) and the CUDA kernel
// (csrc/cuda/gram_apply_cuda.cu).
//
// For one program (tangent k, group g) with rows a_n, e_n (cached) and ȧ_n, ė_n (tangents),
// n, m < S (reference: i2f_fast/reference/gram_apply.py):
//   phase 1, four S×S Grams, stored as coef[q][n][m]:
//     q = 0: a_n·a_m + bias    q = 1: ȧ_n·a_m    q = 2: ė_n·e_m    q = 3: e_n·e_m
//   phase 2, their application, one output row m at a time:
//     ua_m  = Σ_n coef[0][n][m] ė_n + coef[1][n][m] e_n          (O numbers)
//     ute_m = Σ_n coef[2][n][m] a_n + coef[3][n][m] ȧ_n          (I numbers)
// U = Σ_n ė_n a_nᵀ + e_n ȧ_nᵀ (O × I) is never formed: a program reads its rows about
// 2S times (phase 1) plus S times (phase 2) instead of the reference's six batched GEMMs and
// their temporaries. The Grams are accumulated in double for float64 and in float32 for float32.
#pragma once

#include <cstdint>

#include "i2f_fast/host_device.h"

namespace i2f_fast {

// Number of Gram coefficients per program.
I2F_FAST_HD int64_t gram_coef_count(int64_t S) { return 4 * S * S; }

// Index of coef[q][n][m] inside a program's block.
I2F_FAST_HD int64_t gram_coef_index(int q, int64_t n, int64_t m, int64_t S) { return (q * S + n) * S + m; }

}  // namespace i2f_fast
