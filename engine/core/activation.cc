#include "engine/core/activation.h"

namespace sparkle {
namespace {

constexpr struct {
  Activation activation;
  const char* name;
} kNames[] = {{Activation::kNone, "none"},       {Activation::kRelu, "relu"},
              {Activation::kRelu6, "relu6"},     {Activation::kClip, "clip"},
              {Activation::kSigmoid, "sigmoid"}, {Activation::kTanh, "tanh"},
              {Activation::kSilu, "silu"},       {Activation::kGeluTanh, "gelu"}};

}  // namespace

const char* ActivationName(Activation activation) {
  for (const auto& entry : kNames) {
    if (entry.activation == activation) return entry.name;
  }
  return "none";
}

std::optional<Activation> ParseActivation(absl::string_view name) {
  for (const auto& entry : kNames) {
    if (name == entry.name) return entry.activation;
  }
  return std::nullopt;
}

const char* ActivationNames() { return "none, relu, relu6, clip, sigmoid, tanh, silu, gelu"; }

}  // namespace sparkle
