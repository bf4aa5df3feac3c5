// WeightId: the confirmed identity of a job's weights (and bias). Two jobs with equal non-empty
// WeightIds have byte-identical weights and bias: the engine sets it only after proving that
// (engine/core/weight_cache.h), so the CPU backend and the GPUs may key resident or reordered
// weights on it without comparing bytes again.
//   - Registered weights (engine/registry): the registration's key, unique per registration.
//   - Weights sent with the request: XXH3-128 of weight and bias bytes, confirmed by one byte
//     comparison with the engine's cached copy. The hash only finds the candidate; a crafted
//     collision never makes one client's weights stand for another's.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"

namespace sparkle {

struct WeightId {
  enum class Kind : uint8_t { kNone, kRegistered, kContent };
  Kind kind = Kind::kNone;
  uint64_t hi = 0;  // kContent: XXH3-128's high half; kRegistered: 0
  uint64_t lo = 0;  // kContent: XXH3-128's low half; kRegistered: the registration's key

  static WeightId Registered(uint64_t key) { return {Kind::kRegistered, 0, key}; }
  static WeightId Content(uint64_t hi, uint64_t lo) { return {Kind::kContent, hi, lo}; }

  bool empty() const { return kind == Kind::kNone; }
  bool operator==(const WeightId& o) const {
    return kind == o.kind && hi == o.hi && lo == o.lo;
  }
  bool operator!=(const WeightId& o) const { return !(*this == o); }
  template <typename H>
  friend H AbslHashValue(H h, const WeightId& id) {
    return H::combine(std::move(h), id.kind, id.hi, id.lo);
  }
  // "none", "registered:42", "xxh3:0123456789abcdef0123456789abcdef".
  std::string ToString() const {
    switch (kind) {
      case Kind::kNone:
        return "none";
      case Kind::kRegistered:
        return absl::StrFormat("registered:%d", lo);
      case Kind::kContent:
        break;
    }
    return absl::StrFormat("xxh3:%016x%016x", hi, lo);
  }
};

}  // namespace sparkle
