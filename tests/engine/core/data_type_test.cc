#include "engine/core/data_type.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "engine/core/activation.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

TEST(DataTypeTest, NamesRoundTripAndSizes) {
  for (DataType t : {DataType::kFp32, DataType::kBf16, DataType::kFp16}) {
    EXPECT_EQ(ParseDataType(DataTypeName(t)), t);
  }
  EXPECT_FALSE(ParseDataType("fp32").has_value());  // KServe's names are upper case
  EXPECT_FALSE(ParseDataType("INT8").has_value());
  EXPECT_EQ(ElementSize(DataType::kFp32), 4);
  EXPECT_EQ(ElementSize(DataType::kBf16), 2);
  EXPECT_EQ(ElementSize(DataType::kFp16), 2);
}

TEST(DataTypeTest, Bf16RoundsToNearestEvenAndKeepsSpecials) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.00390625f)), 1.0f);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.01171875f)), 1.015625f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.005f)), 1.0078125f);  // above halfway: up
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);          // exact
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::infinity()))));
  EXPECT_TRUE(std::isinf(Bf16ToFloat(FloatToBf16(std::numeric_limits<float>::max()))));
}

TEST(DataTypeTest, Fp16ConvertsExactlyAndRounds) {
  EXPECT_EQ(FloatToFp16(1.0f), 0x3c00);
  EXPECT_EQ(Fp16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFloat(0x7bff), 65504.0f);                      // largest finite
  EXPECT_TRUE(std::isinf(Fp16ToFloat(FloatToFp16(70000.0f))));   // overflow
  EXPECT_EQ(Fp16ToFloat(FloatToFp16(1.0f + 1.0f / 2048)), 1.0f);  // tie to even
  EXPECT_EQ(Fp16ToFloat(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
}

TEST(DataTypeTest, WidenAndNarrowRoundTripRepresentableValues) {
  const std::vector<float> values = {0.f, -0.f, 1.5f, -3.25f, 0.125f, 1024.f};
  for (DataType t : {DataType::kFp32, DataType::kBf16, DataType::kFp16}) {
    std::vector<uint8_t> bytes(values.size() * ElementSize(t));
    NarrowFromFloat(t, values.data(), bytes.data(), static_cast<int64_t>(values.size()));
    std::vector<float> back(values.size());
    WidenToFloat(t, bytes.data(), back.data(), static_cast<int64_t>(values.size()));
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(back[i], values[i]) << DataTypeName(t) << " " << i;
      EXPECT_EQ(std::signbit(back[i]), std::signbit(values[i]));
    }
  }
}

TEST(ActivationTest, NamesAndDefinitions) {
  for (const char* name : {"none", "relu", "relu6", "clip", "sigmoid", "tanh", "silu", "gelu"}) {
    const auto a = ParseActivation(name);
    ASSERT_TRUE(a.has_value()) << name;
    EXPECT_STREQ(ActivationName(*a), name);
  }
  EXPECT_FALSE(ParseActivation("Relu").has_value());
  EXPECT_FALSE(ParseActivation("gelu_erf").has_value());
  EXPECT_EQ(ApplyActivation(Activation::kRelu, -2, 0, 0), 0);
  EXPECT_EQ(ApplyActivation(Activation::kRelu6, 7, 0, 0), 6);
  EXPECT_EQ(ApplyActivation(Activation::kClip, -2, -1, 1), -1);
  EXPECT_EQ(ApplyActivation(Activation::kClip, 0.5, -1, 1), 0.5);
  EXPECT_DOUBLE_EQ(ApplyActivation(Activation::kSigmoid, 0, 0, 0), 0.5);
  EXPECT_DOUBLE_EQ(ApplyActivation(Activation::kSilu, 2, 0, 0), 2 / (1 + std::exp(-2.0)));
  // GELU's tanh approximation at 1: 0.8411919906 (vs the erf form's 0.8413447461).
  EXPECT_NEAR(ApplyActivation(Activation::kGeluTanh, 1, 0, 0), 0.8411919906, 1e-9);
}

}  // namespace
}  // namespace sparkle
