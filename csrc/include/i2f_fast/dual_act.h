// Per-element math of the engine's activation rule (i2f_fast::dual_act), shared by the C++/OpenMP
// kernel (csrc/cpu/dual_act_cpu.cpp) and the CUDA kernel (csrc/cuda/dual_act_cuda.cu).
//
// For an activation a = σ(z) the engine needs σ'(z) ⊙ t + σ''(z) ⊙ da ⊙ s (ENGINE.md; reference:
// i2f_fast/reference/dual_act.py). The derivative formulas below are the reference's
// activation_derivatives, term for term, so that the three implementations agree to rounding:
// they match PyTorch's autograd, including its one-sided values at the kinks (σ'(0) = 0 for ReLU,
// alpha for leaky ReLU; σ''(0) = 0 for ELU) and softplus's linear branch above its threshold.
#pragma once

#include <math.h>

#include <string_view>

#include "i2f_fast/host_device.h"

namespace i2f_fast {

// Activation codes; the order is the one of i2f_fast.reference.dual_act.ACTIVATIONS.
enum ActCode : int {
  kActSigmoid = 0,
  kActTanh = 1,
  kActRelu = 2,
  kActLeakyRelu = 3,
  kActElu = 4,
  kActGelu = 5,
  kActGeluTanh = 6,
  kActSilu = 7,
  kActSoftplus = 8,
};
constexpr int kNumActs = 9;

// The code of an activation name, or -1 (host only).
inline int act_code(std::string_view name) {
  constexpr std::string_view names[kNumActs] = {"sigmoid", "tanh", "relu", "leaky_relu", "elu",
                                                "gelu",    "gelu_tanh", "silu", "softplus"};
  for (int i = 0; i < kNumActs; ++i)
    if (names[i] == name) return i;
  return -1;
}

// exp / tanh / erf in the argument's precision, on host and device.
I2F_FAST_HD float act_exp(float x) { return expf(x); }
I2F_FAST_HD double act_exp(double x) { return exp(x); }
I2F_FAST_HD float act_tanh(float x) { return tanhf(x); }
I2F_FAST_HD double act_tanh(double x) { return tanh(x); }
I2F_FAST_HD float act_erf(float x) { return erff(x); }
I2F_FAST_HD double act_erf(double x) { return erf(x); }

template <typename T>
I2F_FAST_HD T act_sigmoid(T x) {
  return T(1) / (T(1) + act_exp(-x));
}

// (σ'(z), σ''(z)) of activation `act`. `alpha` is leaky ReLU's slope, ELU's alpha or softplus's
// beta; `threshold` is softplus's threshold. With a compile-time `act` the switch folds away.
template <typename T>
I2F_FAST_HD void act_derivatives(int act, T z, T alpha, T threshold, T& d1, T& d2) {
  constexpr T kInvSqrt2Pi = T(0.39894228040143267794);  // 1/√(2π)
  constexpr T kInvSqrt2 = T(0.70710678118654752440);    // 1/√2
  constexpr T kGeluC = T(0.79788456080286535588);       // √(2/π)
  constexpr T kGeluK = T(0.044715);
  switch (act) {
    case kActSigmoid: {
      const T s = act_sigmoid(z);
      d1 = s * (T(1) - s);
      d2 = d1 * (T(1) - T(2) * s);
      return;
    }
    case kActTanh: {
      const T t = act_tanh(z);
      d1 = T(1) - t * t;
      d2 = T(-2) * t * d1;
      return;
    }
    case kActRelu:
      d1 = z > T(0) ? T(1) : T(0);
      d2 = T(0);
      return;
    case kActLeakyRelu:
      d1 = z > T(0) ? T(1) : alpha;
      d2 = T(0);
      return;
    case kActElu: {
      const T neg = alpha * act_exp(z < T(0) ? z : T(0));
      d1 = z > T(0) ? T(1) : neg;
      d2 = z < T(0) ? neg : T(0);
      return;
    }
    case kActGelu: {
      const T pdf = act_exp(T(-0.5) * z * z) * kInvSqrt2Pi;
      const T cdf = T(0.5) * (T(1) + act_erf(z * kInvSqrt2));
      d1 = cdf + z * pdf;
      d2 = pdf * (T(2) - z * z);
      return;
    }
    case kActGeluTanh: {
      const T u = kGeluC * (z + kGeluK * z * z * z);
      const T du = kGeluC * (T(1) + T(3) * kGeluK * z * z);
      const T ddu = kGeluC * T(6) * kGeluK * z;
      const T t = act_tanh(u);
      const T sech2 = T(1) - t * t;
      d1 = T(0.5) * (T(1) + t) + T(0.5) * z * sech2 * du;
      d2 = sech2 * (du - z * t * du * du + T(0.5) * z * ddu);
      return;
    }
    case kActSilu: {
      const T s = act_sigmoid(z);
      d1 = s * (T(1) + z * (T(1) - s));
      d2 = s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s));
      return;
    }
    default: {  // kActSoftplus
      const T bz = alpha * z;
      const T s = act_sigmoid(bz);
      // autograd: σ' is linear for βz > threshold, σ'' for βz >= threshold (both 0 / 1 there)
      d1 = bz > threshold ? T(1) : s;
      d2 = bz >= threshold ? T(0) : alpha * s * (T(1) - s);
      return;
    }
  }
}

// One output element: σ'⊙t (+ σ''⊙da⊙s when `second`).
template <typename T>
I2F_FAST_HD T dual_act_element(T d1, T d2da, T t, T s, bool second) {
  return second ? d1 * t + d2da * s : d1 * t;
}

}  // namespace i2f_fast
