#include "client/arg_parse.h"

#include <limits>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sparkle::client {

absl::StatusOr<std::vector<int64_t>> ParseShape(absl::string_view text) {
  const absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  if (trimmed.empty()) {
    return absl::InvalidArgumentError("shape is empty; expected e.g. \"1x16x32x32\"");
  }
  std::vector<int64_t> shape;
  int64_t elements = 1;
  for (absl::string_view part : absl::StrSplit(trimmed, absl::ByAnyChar("x,"))) {
    int64_t dim = 0;
    if (!absl::SimpleAtoi(part, &dim)) {
      return absl::InvalidArgumentError(absl::StrCat("shape \"", text, "\": dimension ",
                                                     shape.size(), " (\"", part,
                                                     "\") is not an integer"));
    }
    if (dim < 1) {
      return absl::InvalidArgumentError(absl::StrCat("shape \"", text, "\": dimension ",
                                                     shape.size(), " must be >= 1; was ", dim));
    }
    if (elements > std::numeric_limits<int64_t>::max() / dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape \"", text, "\": element count overflows int64"));
    }
    elements *= dim;
    shape.push_back(dim);
  }
  return shape;
}

std::string FormatShape(absl::Span<const int64_t> shape) {
  if (shape.empty()) return "scalar";
  return absl::StrJoin(shape, "x");
}

absl::StatusOr<std::vector<int>> ParseIntList(absl::string_view text, int min, int max) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int value = 0;
    if (!absl::SimpleAtoi(part, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("list \"", text, "\": \"", part, "\" is not an integer"));
    }
    if (value < min || value > max) {
      return absl::InvalidArgumentError(absl::StrCat("list \"", text, "\": ", value,
                                                     " is outside [", min, ", ", max, "]"));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<std::pair<std::string, int64_t>> ParseInt64Param(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter \"", text, "\" is not of the form key=value"));
  }
  const absl::string_view key = text.substr(0, eq);
  const absl::string_view value_text = text.substr(eq + 1);
  int64_t value = 0;
  if (!absl::SimpleAtoi(value_text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("parameter \"", text, "\": value \"",
                                                   value_text, "\" is not an int64"));
  }
  return std::make_pair(std::string(key), value);
}

}  // namespace sparkle::client
