// DataType: the element type of a request's tensors (KServe v2 datatype strings), and the
// scalar conversions every backend and the oracle share. BF16 and FP16 are stored as their
// IEEE bit patterns (uint16_t, little-endian on the wire as on this machine); arithmetic is
// always done in FP32 (or double, in the oracle) after widening.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>

#include "absl/strings/string_view.h"

namespace sparkle {

enum class DataType { kFp32, kBf16, kFp16 };

// "FP32", "BF16", "FP16": KServe v2's names.
const char* DataTypeName(DataType type);
// The DataType of a KServe name; nullopt for any other string (case-sensitive, as KServe).
std::optional<DataType> ParseDataType(absl::string_view name);
// Bytes per element: 4 or 2.
inline int64_t ElementSize(DataType type) { return type == DataType::kFp32 ? 4 : 2; }

// BF16 bits → float (exact).
inline float Bf16ToFloat(uint16_t bits) {
  const uint32_t wide = uint32_t{bits} << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}
// float → BF16 bits, rounded to nearest even; NaN stays NaN (quiet), infinities stay.
uint16_t FloatToBf16(float value);
// FP16 bits → float (exact), and float → FP16 bits rounded to nearest even (overflow → inf).
float Fp16ToFloat(uint16_t bits);
uint16_t FloatToFp16(float value);

// `count` elements of `type` at `src` → floats, and floats → `type` (rounded to nearest even).
// FP32 is a copy. count 0 does nothing (the pointers may then be null).
void WidenToFloat(DataType type, const void* src, float* dst, int64_t count);
void NarrowFromFloat(DataType type, const float* src, void* dst, int64_t count);

}  // namespace sparkle
