#include "server/weights_header.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace sparkle {

absl::StatusOr<WeightHeader> WeightHeaderFromProto(const sparkle::v1::WeightsHeader& h) {
  WeightHeader header;
  header.label = h.label();
  header.shape.assign(h.shape().begin(), h.shape().end());
  header.datatype = h.datatype().empty() ? "FP32" : h.datatype();
  if (h.bias().size() % sizeof(float) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "header.bias is ", h.bias().size(), " bytes, not a whole number of FP32 values"));
  }
  // Without a bias the vector stays empty: memcpy from/to a null pointer is undefined even for
  // 0 bytes (UBSan halts on it).
  if (!h.bias().empty()) {
    header.bias.resize(h.bias().size() / sizeof(float));
    std::memcpy(header.bias.data(), h.bias().data(), h.bias().size());
  }
  return header;
}

}  // namespace sparkle
