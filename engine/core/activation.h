// Activation: the fused epilogue's elementwise function (docs/protocol.md `activation`), applied
// to conv + bias (+ residual). The names are the wire names; `gelu` is GELU's tanh
// approximation, 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), and is documented as such.
#pragma once

#include <cmath>
#include <optional>

#include "absl/strings/string_view.h"

namespace sparkle {

enum class Activation { kNone, kRelu, kRelu6, kClip, kSigmoid, kTanh, kSilu, kGeluTanh };

// "none", "relu", "relu6", "clip", "sigmoid", "tanh", "silu", "gelu".
const char* ActivationName(Activation activation);
// The Activation of a wire name (those above); nullopt for any other.
std::optional<Activation> ParseActivation(absl::string_view name);
// Every wire name, comma-separated, for error messages.
const char* ActivationNames();

// The activation in double precision: the oracle's definition. `lo`/`hi` are clip's bounds
// (ignored otherwise).
inline double ApplyActivation(Activation a, double x, double lo, double hi) {
  switch (a) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return x > 0 ? x : 0;
    case Activation::kRelu6:
      return x < 0 ? 0 : (x > 6 ? 6 : x);
    case Activation::kClip:
      return x < lo ? lo : (x > hi ? hi : x);
    case Activation::kSigmoid:
      return 1 / (1 + std::exp(-x));
    case Activation::kTanh:
      return std::tanh(x);
    case Activation::kSilu:
      return x / (1 + std::exp(-x));
    case Activation::kGeluTanh:
      return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  }
  return x;
}

}  // namespace sparkle
