// Spread: min / median / max of repeated measurements, the only way benchmark figures are
// reported here (the machines are shared and noisy).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

namespace sparkle::bench {

struct Spread {
  double min = 0, median = 0, max = 0;
};

// `v` must not be empty; the median of an even count is the upper middle value.
inline Spread Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

// "min/median/max", each printed with the printf conversion `f` (e.g. "%.1f").
inline std::string Fmt(const Spread& s, const char* f = "%.1f") {
  return absl::StrFormat("%s/%s/%s", absl::StrFormat(f, s.min), absl::StrFormat(f, s.median),
                         absl::StrFormat(f, s.max));
}

}  // namespace sparkle::bench
