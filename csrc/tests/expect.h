// The checks shared by the C++ tests (ctest): record failures instead of stopping at the first,
// then report them all from main().
#pragma once

#include <ATen/ATen.h>

#include <cstdio>
#include <string>

namespace i2f_fast_test {

inline int failures = 0;

// A failure when the shapes differ or |got − want| > atol + rtol·|want| anywhere (compared in float64).
inline void expect_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol,
                         const std::string& what) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  const double err = w.numel() ? (g - w).abs().sub(w.abs().mul(rtol)).max().item<double>() : 0.0;
  if (got.sizes() != want.sizes() || !(err <= atol)) {
    std::fprintf(stderr, "FAIL %s: excess error %g\n", what.c_str(), err);
    ++failures;
  }
}

inline void fail(const std::string& what) {
  std::fprintf(stderr, "FAIL %s\n", what.c_str());
  ++failures;
}

// main()'s exit status: 1 with the number of failed checks, else 0 with "<what>: all checks passed".
inline int report(const char* what) {
  if (failures) {
    std::fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  std::printf("%s: all checks passed\n", what);
  return 0;
}

}  // namespace i2f_fast_test
