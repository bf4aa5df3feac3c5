#include "server/weights_header.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/core/data_type.h"

namespace sparkle {

absl::StatusOr<WeightHeader> WeightHeaderFromProto(const sparkle::v1::WeightsHeader& h) {
  WeightHeader header;
  header.label = h.label();
  header.shape.assign(h.shape().begin(), h.shape().end());
  header.datatype = h.datatype().empty() ? "FP32" : h.datatype();
  // The bias is in the header's datatype; an unknown datatype is the registry's error (Begin),
  // its bias is read as FP32 meanwhile.
  const DataType type = ParseDataType(header.datatype).value_or(DataType::kFp32);
  const size_t element = static_cast<size_t>(ElementSize(type));
  if (h.bias().size() % element != 0) {
    return absl::InvalidArgumentError(absl::StrCat("header.bias is ", h.bias().size(),
                                                   " bytes, not a whole number of ",
                                                   DataTypeName(type), " values"));
  }
  // Without a bias the vector stays empty (a null pointer must not reach WidenToFloat's memcpy).
  if (!h.bias().empty()) {
    header.bias.resize(h.bias().size() / element);
    WidenToFloat(type, h.bias().data(), header.bias.data(),
                 static_cast<int64_t>(header.bias.size()));
  }
  return header;
}

}  // namespace sparkle
