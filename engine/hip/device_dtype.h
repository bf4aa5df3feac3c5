// BF16 / FP16 <-> FP32 conversions for device code (and host code: __host__ __device__),
// written with bit operations so that they compile unchanged in every GPU build (clang HIP,
// nvcc through hip-on-cuda, g++ in the emulator) without hip_bf16.h / hip_fp16.h. Rounding is
// to nearest even, NaN stays a quiet NaN and overflow gives infinity: the same results as
// engine/core/data_type.h's host functions. HIP-only header.
#pragma once

#include <hip/hip_runtime.h>

#include <cstdint>
#include <cstring>

#include "engine/core/data_type.h"

namespace sparkle::hip {

__host__ __device__ inline float BitsToFloat(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}
__host__ __device__ inline uint32_t FloatToBits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  return bits;
}

// BF16 bits -> float (exact).
__host__ __device__ inline float DeviceBf16ToFloat(uint16_t h) {
  return BitsToFloat(static_cast<uint32_t>(h) << 16);
}
// float -> BF16 bits, nearest even.
__host__ __device__ inline uint16_t DeviceFloatToBf16(float f) {
  const uint32_t x = FloatToBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // NaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// FP16 bits -> float (exact).
__host__ __device__ inline float DeviceFp16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return BitsToFloat(sign | 0x7f800000u | (m << 13));  // inf, NaN
  if (e == 0) {
    // Zero or subnormal: m * 2^-24, exact in float.
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign != 0 ? -v : v;
  }
  return BitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}
// float -> FP16 bits, nearest even; beyond the largest half (after rounding) -> infinity.
__host__ __device__ inline uint16_t DeviceFloatToFp16(float f) {
  uint32_t x = FloatToBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return static_cast<uint16_t>(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (x >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (x < 0x38800000u) {
    // Below 2^-14: a half subnormal (or zero), units of 2^-24.
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);  // at most 2^-25: 0 (ties to even)
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t half = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u) != 0)) ++half;  // a carry gives the smallest normal
    return static_cast<uint16_t>(sign | half);
  }
  const uint32_t r = x - 0x38000000u;  // exponent rebiased from 127 to 15
  return static_cast<uint16_t>(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}

// Element i of a tensor of `type` as float; and a float stored as `type`.
__host__ __device__ inline float LoadAsFloat(DataType type, const void* p, int64_t i) {
  switch (type) {
    case DataType::kBf16:
      return DeviceBf16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DataType::kFp16:
      return DeviceFp16ToFloat(static_cast<const uint16_t*>(p)[i]);
    case DataType::kFp32:
      break;
  }
  return static_cast<const float*>(p)[i];
}
__host__ __device__ inline void StoreFromFloat(DataType type, void* p, int64_t i, float v) {
  switch (type) {
    case DataType::kBf16:
      static_cast<uint16_t*>(p)[i] = DeviceFloatToBf16(v);
      return;
    case DataType::kFp16:
      static_cast<uint16_t*>(p)[i] = DeviceFloatToFp16(v);
      return;
    case DataType::kFp32:
      break;
  }
  static_cast<float*>(p)[i] = v;
}

}  // namespace sparkle::hip
