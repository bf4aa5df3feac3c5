#include "engine/core/data_type.h"

#include <fp16.h>  // Debian libfp16-dev: IEEE half conversions

#include <cmath>

namespace sparkle {

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kBf16:
      return "BF16";
    case DataType::kFp16:
      return "FP16";
    case DataType::kFp32:
      break;
  }
  return "FP32";
}

std::optional<DataType> ParseDataType(absl::string_view name) {
  if (name == "FP32") return DataType::kFp32;
  if (name == "BF16") return DataType::kBf16;
  if (name == "FP16") return DataType::kFp16;
  return std::nullopt;
}

uint16_t FloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x0040);  // quiet NaN
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);                       // nearest even
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Fp16ToFloat(uint16_t bits) { return fp16_ieee_to_fp32_value(bits); }
uint16_t FloatToFp16(float value) { return fp16_ieee_from_fp32_value(value); }

void WidenToFloat(DataType type, const void* src, float* dst, int64_t count) {
  if (count <= 0) return;  // the pointers of an empty tensor may be null (memcpy forbids it)
  const auto* half = static_cast<const uint16_t*>(src);
  switch (type) {
    case DataType::kFp32:
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
      return;
    case DataType::kBf16:
      for (int64_t i = 0; i < count; ++i) dst[i] = Bf16ToFloat(half[i]);
      return;
    case DataType::kFp16:
      for (int64_t i = 0; i < count; ++i) dst[i] = Fp16ToFloat(half[i]);
      return;
  }
}

void NarrowFromFloat(DataType type, const float* src, void* dst, int64_t count) {
  if (count <= 0) return;  // as above
  auto* half = static_cast<uint16_t*>(dst);
  switch (type) {
    case DataType::kFp32:
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
      return;
    case DataType::kBf16:
      for (int64_t i = 0; i < count; ++i) half[i] = FloatToBf16(src[i]);
      return;
    case DataType::kFp16:
      for (int64_t i = 0; i < count; ++i) half[i] = FloatToFp16(src[i]);
      return;
  }
}

}  // namespace sparkle
