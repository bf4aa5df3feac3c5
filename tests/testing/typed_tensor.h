// TypedTensor: a test tensor in one DataType (FP32 floats, or BF16/FP16 bit patterns), made by
// rounding floats (e.g. RandomFloats) to nearest even, and widened back for comparisons. The
// oracle (Conv2dRef) is then run on the same rounded values, so a backend's error is its
// arithmetic and output rounding only. Header-only: CPU and GPU tests share it.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/core/data_type.h"
#include "tests/testing/shape_table.h"

namespace sparkle::testing {

class TypedTensor {
 public:
  TypedTensor() = default;
  // `values` rounded to `type` (a copy for FP32).
  TypedTensor(DataType type, const std::vector<float>& values) : type_(type) {
    if (type == DataType::kFp32) {
      fp32_ = values;
    } else {
      half_.resize(values.size());
      NarrowFromFloat(type, values.data(), half_.data(), static_cast<int64_t>(values.size()));
    }
  }
  // RandomFloats(count, seed) in [-1, 1), rounded to `type`.
  static TypedTensor Random(DataType type, int64_t count, uint32_t seed) {
    return TypedTensor(type, RandomFloats(count, seed));
  }
  // `count` copies of `value` (e.g. NaN, so that unwritten elements count as errors).
  static TypedTensor Filled(DataType type, int64_t count, float value) {
    return TypedTensor(type, std::vector<float>(count, value));
  }

  DataType type() const { return type_; }
  int64_t size() const {
    return static_cast<int64_t>(type_ == DataType::kFp32 ? fp32_.size() : half_.size());
  }
  int64_t bytes() const { return size() * ElementSize(type_); }
  // The elements as the wire carries them (nullptr when empty).
  const void* data() const {
    if (size() == 0) return nullptr;
    return type_ == DataType::kFp32 ? static_cast<const void*>(fp32_.data()) : half_.data();
  }
  void* data() {
    if (size() == 0) return nullptr;
    return type_ == DataType::kFp32 ? static_cast<void*>(fp32_.data()) : half_.data();
  }
  // The elements as floats (exact).
  std::vector<float> ToFloats() const {
    std::vector<float> out(size());
    WidenToFloat(type_, data(), out.data(), size());
    return out;
  }

 private:
  DataType type_ = DataType::kFp32;
  std::vector<float> fp32_;
  std::vector<uint16_t> half_;
};

}  // namespace sparkle::testing
