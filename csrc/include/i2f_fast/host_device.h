// I2F_FAST_HD marks the per-element math shared by the C++ (csrc/cpu) and CUDA (csrc/cuda)
// kernels: __host__ __device__ under nvcc, plain inline otherwise.
#pragma once

#if defined(__CUDACC__)
#define I2F_FAST_HD __host__ __device__ __forceinline__
#else
#define I2F_FAST_HD inline
#endif
