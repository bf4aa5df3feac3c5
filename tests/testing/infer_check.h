// CheckRawOutput: compares a ModelInfer response's single raw output with the oracle's result,
// for the tests that talk to a real daemon. Header-only, so sparkle_testing needs no protobuf.
#pragma once

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "inference/grpc_predict_v2.pb.h"
#include "tests/testing/shape_table.h"

namespace sparkle::testing {

// "" when `response` holds exactly one raw output equal to `expected` (relative L2 error
// < 1e-5); otherwise what differs.
inline std::string CheckRawOutput(const inference::ModelInferResponse& response,
                                  const std::vector<float>& expected) {
  if (response.raw_output_contents_size() != 1) return "no raw output";
  const std::string& raw = response.raw_output_contents(0);
  if (raw.size() != expected.size() * sizeof(float)) return "wrong output byte count";
  std::vector<float> got(expected.size());
  std::memcpy(got.data(), raw.data(), raw.size());
  const double err = RelativeL2Error(got.data(), expected.data(), got.size());
  return err < 1e-5 ? "" : absl::StrCat("relative L2 error ", err);
}

}  // namespace sparkle::testing
