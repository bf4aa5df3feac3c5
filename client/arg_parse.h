// The value syntax of sparklectl's flags: shapes ("1x16x32x32"), integer lists ("1,4,16") and
// request parameters ("priority=1"). Kept apart from main.cc so that it can be unit-tested
// without a flag registry. Every error is INVALID_ARGUMENT and quotes the offending text.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sparkle::client {

// "1x16x32x32" (or "1,16,32,32") → {1, 16, 32, 32}. Every dimension must be >= 1, and the
// element count must fit in int64 (the server rejects empty tensors, so the client does too).
absl::StatusOr<std::vector<int64_t>> ParseShape(absl::string_view text);

// {1, 16, 32, 32} → "1x16x32x32"; {} → "scalar".
std::string FormatShape(absl::Span<const int64_t> shape);

// "1,4,16,64" → {1, 4, 16, 64}. Each value must lie in [min, max]; duplicates are kept (a
// repeated level is measured again, which is occasionally what one wants).
absl::StatusOr<std::vector<int>> ParseIntList(absl::string_view text, int min, int max);

// "key=value" with an int64 value → {"key", value}. The key must be non-empty.
absl::StatusOr<std::pair<std::string, int64_t>> ParseInt64Param(absl::string_view text);

}  // namespace sparkle::client
