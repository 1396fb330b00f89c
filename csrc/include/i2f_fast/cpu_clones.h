// Run-time choice of the widest vector unit for the CPU kernels' inner loops. A function marked
// I2F_FAST_CPU_CLONES is compiled three times (AVX-512, AVX2, baseline x86-64) and the loader picks
// the best version for the CPU (GCC/Clang target_clones, resolved once through an ifunc), so the
// extension stays runnable on any x86-64 CPU while the loops use 8- or 16-wide vectors where they
// can (bench_fused_attack: the fused attack step is compute-bound on sqrt and division). Other
// platforms (and nvcc) get the single baseline version.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define I2F_FAST_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define I2F_FAST_CPU_CLONES
#endif
