// The weight tensor that request_parser_fuzz registers (so that a `weight_id` parameter can name
// it) and that make_seeds.cc uses to write seeds and the dictionary with its id.
#pragma once

#include <memory>
#include <vector>

#include "engine/registry/weight_registry.h"
#include "spdlog/spdlog.h"

namespace sparkle::fuzz {

// [K=4, C/groups=3, R=3, S=3] with a bias: a 3x3 conv over 3 channels.
inline WeightHeader RegisteredHeader() {
  WeightHeader header;
  header.label = "fuzz";
  header.shape = {4, 3, 3, 3};
  header.bias = {0.5f, -1.0f, 2.0f, 0.0f};
  return header;
}

inline std::vector<float> RegisteredValues() {
  std::vector<float> values(4 * 3 * 3 * 3);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.25f - 3.0f;
  return values;
}

// A memory-only registry holding RegisteredHeader()/RegisteredValues(); aborts on failure.
inline std::unique_ptr<WeightRegistry> MakeRegistryWithOneWeight(std::string* id) {
  spdlog::set_level(spdlog::level::off);
  WeightRegistry::Options options;
  options.budget_bytes = 1 << 20;
  auto registry = WeightRegistry::Create(options);
  if (!registry.ok()) std::abort();
  const std::vector<float> values = RegisteredValues();
  auto registered = (*registry)->Register(RegisteredHeader(), values);
  if (!registered.ok()) std::abort();
  *id = registered->weight->id();
  return *std::move(registry);
}

}  // namespace sparkle::fuzz
