// The conv kernels' fused epilogue, applied once to each output element in their final store:
//   out = activation(acc + bias + residual)
// in FP32, with engine/core/activation.h's activations (expf/tanhf; gelu is the tanh
// approximation, as the oracle defines it). Every kernel's store calls ApplyConvEpilogue, so all
// implementations compute the same function. HIP-only header.
#pragma once

#include <hip/hip_runtime.h>

#include "engine/core/activation.h"
#include "engine/core/conv2d_params.h"

namespace sparkle::hip {

// What the store adds and applies after the bias; passed to the kernels by value.
struct ConvEpilogue {
  Activation activation = Activation::kNone;
  float lo = 0, hi = 0;              // clip's bounds
  const float* residual = nullptr;   // FP32, the output's shape and layout; null: none
};

inline ConvEpilogue MakeConvEpilogue(const Conv2dParams& p, const float* residual) {
  ConvEpilogue e;
  e.activation = p.activation;
  e.lo = p.clip_min;
  e.hi = p.clip_max;
  e.residual = p.has_residual ? residual : nullptr;
  return e;
}

__host__ __device__ inline float Activate(Activation a, float x, float lo, float hi) {
  switch (a) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return x > 0.0f ? x : 0.0f;
    case Activation::kRelu6:
      return x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x);
    case Activation::kClip:
      return x < lo ? lo : (x > hi ? hi : x);
    case Activation::kSigmoid:
      return 1.0f / (1.0f + expf(-x));
    case Activation::kTanh:
      return tanhf(x);
    case Activation::kSilu:
      return x / (1.0f + expf(-x));
    case Activation::kGeluTanh:
      return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  }
  return x;
}

// `value` = accumulator + bias of output element `index` (its offset in the output layout).
// with_residual / with_activation: false for the partial sums of split-K ranges other than the
// one that adds them (activation is refused there altogether).
__host__ __device__ inline float ApplyConvEpilogue(const ConvEpilogue& e, float value, int index,
                                                   bool with_residual = true,
                                                   bool with_activation = true) {
  if (with_residual && e.residual != nullptr) value += e.residual[index];
  return with_activation ? Activate(e.activation, value, e.lo, e.hi) : value;
}

}  // namespace sparkle::hip
