#include "engine/core/conv2d_params.h"

#include <cmath>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;

Conv2dParams Resnet3x3() {
  Conv2dParams p;
  p.n = 1, p.c = 64, p.h = 56, p.w = 56, p.k = 64, p.r = 3, p.s = 3, p.SetPad(1, 1);
  return p;
}

TEST(Conv2dParamsTest, OutputShapeFollowsTheProtocolFormula) {
  Conv2dParams p = Resnet3x3();
  ASSERT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.p(), 56);
  EXPECT_EQ(p.q(), 56);
  p.stride_h = 2, p.stride_w = 3;
  EXPECT_EQ(p.p(), 28);  // (56 + 2 - 2 - 1) / 2 + 1
  EXPECT_EQ(p.q(), 19);  // (56 + 2 - 2 - 1) / 3 + 1
  p.stride_h = p.stride_w = 1;
  p.dilation_h = 2;
  EXPECT_EQ(p.p(), 54);  // (56 + 2 - 4 - 1) / 1 + 1
  EXPECT_DOUBLE_EQ(Resnet3x3().flops(), 2.0 * 64 * 56 * 56 * 64 * 9);
  EXPECT_EQ(Resnet3x3().total_bytes(), 4 * (64 * 56 * 56 * 2 + 64 * 64 * 9));
}

struct InvalidCase {
  std::string name;
  void (*mutate)(Conv2dParams&);
  std::string message;
};

TEST(Conv2dParamsTest, RejectsEachInvalidFieldByName) {
  const InvalidCase cases[] = {
      {"zero N", [](Conv2dParams& p) { p.n = 0; }, "N must be >= 1; was 0"},
      {"negative C", [](Conv2dParams& p) { p.c = -3; }, "C must be >= 1; was -3"},
      {"zero K", [](Conv2dParams& p) { p.k = 0; }, "K must be >= 1; was 0"},
      {"zero stride", [](Conv2dParams& p) { p.stride_w = 0; }, "stride_w must be >= 1; was 0"},
      {"negative pad", [](Conv2dParams& p) { p.pad_bottom = -1; }, "pad_bottom must be >= 0; was -1"},
      {"zero dilation", [](Conv2dParams& p) { p.dilation_h = 0; }, "dilation_h must be >= 1"},
      {"groups not dividing C", [](Conv2dParams& p) { p.groups = 3; }, "must divide the input"},
      {"groups not dividing K",
       [](Conv2dParams& p) {
         p.groups = 4;
         p.k = 6;
       },
       "must divide the output"},
      {"kernel larger than padded input", [](Conv2dParams& p) { p.r = 59; },
       "kernel height R=59"},
      {"dilated kernel too wide",
       [](Conv2dParams& p) {
         p.dilation_w = 40;
       },
       "kernel width S=3"},
      {"huge dim", [](Conv2dParams& p) { p.h = (int64_t{1} << 31) + 1; }, "H must be <= 2^31-1"},
      // oneDNN computes dims in an int: 2^31 used to pass and come back INTERNAL.
      {"stride beyond int", [](Conv2dParams& p) { p.stride_w = int64_t{1} << 31; },
       "stride_w must be <= 2^31-1; was 2147483648"},
      {"padded width beyond int", [](Conv2dParams& p) { p.SetPad(0, int64_t{1} << 30); },
       "padded input width W+pad_left+pad_right must be <= 2^31-1"},
      {"dilated kernel beyond int",
       [](Conv2dParams& p) { p.dilation_h = int64_t{1} << 30; },
       "dilated kernel height (R-1)*dilation_h+1 must be <= 2^31-1"},
      {"im2col overflows",
       [](Conv2dParams& p) {
         p.c = 16, p.k = 1;
         p.h = p.w = 1 << 16;
         p.r = p.s = 1 << 15;
         p.SetPad(0, 0);
       },
       "im2col (C/groups)*R*S*P*Q overflows"},
      {"input overflows",
       [](Conv2dParams& p) {
         p.n = p.c = p.h = p.w = (int64_t{1} << 31) - 1;
         p.SetPad(0, 0);
       },
       "input N*C*H*W overflows"},
      {"output overflows",
       [](Conv2dParams& p) {
         p.n = (int64_t{1} << 31) - 1;
         p.k = (int64_t{1} << 31) - 1;
         p.c = 1;
       },
       "output N*K*P*Q overflows"},
  };
  for (const InvalidCase& c : cases) {
    SCOPED_TRACE(c.name);
    Conv2dParams p = Resnet3x3();
    c.mutate(p);
    absl::Status status = p.Validate();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
  }
}

TEST(Conv2dParamsTest, CostAccessors) {
  const Conv2dParams p = Resnet3x3();  // n1 c64 56x56 k64 3x3 pad 1
  ASSERT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.padded_input_bytes(), 4 * 64 * 58 * 58);
  EXPECT_EQ(p.im2col_bytes(), int64_t{4} * 64 * 9 * 56 * 56);
  EXPECT_DOUBLE_EQ(p.flops(), 2.0 * 64 * 56 * 56 * 64 * 9);
  // The hostile case of the issue: a 1x1 input padded to 2^21 columns is valid (PyTorch
  // accepts it) but its cost shows in these accessors, which the engine bounds.
  Conv2dParams hostile{.k = 2, .pad_left = 1 << 20, .pad_right = 1 << 20};
  ASSERT_TRUE(hostile.Validate().ok());
  EXPECT_EQ(hostile.q(), (1 << 21) + 1);
  EXPECT_EQ(hostile.output_elements() * 4, int64_t{8} * ((1 << 21) + 1));
  EXPECT_EQ(hostile.padded_input_bytes(), int64_t{4} * ((1 << 21) + 1));
  // Grouped: im2col is per group.
  Conv2dParams g{.c = 32, .h = 8, .w = 8, .k = 32, .r = 3, .s = 3, .groups = 4};
  ASSERT_TRUE(g.Validate().ok());
  EXPECT_EQ(g.im2col_bytes(), 4 * 8 * 9 * 6 * 6);
}

TEST(Conv2dParamsTest, KernelEqualToPaddedImageIsValid) {
  Conv2dParams p = Resnet3x3();
  p.r = p.s = 58;  // 56 + 2*1
  ASSERT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.p(), 1);
  EXPECT_EQ(p.q(), 1);
}

TEST(Conv2dParamsTest, SameGeometryIgnoresOnlyN) {
  Conv2dParams a = Resnet3x3(), b = Resnet3x3();
  b.n = 7;
  EXPECT_TRUE(a.SameGeometry(b));
  EXPECT_EQ(a.ShapeClass(), b.ShapeClass());
  EXPECT_NE(a.ToString(), b.ToString());
  b.layout = Layout::kNHWC;
  EXPECT_FALSE(a.SameGeometry(b));
  b = Resnet3x3();
  b.has_bias = true;
  EXPECT_FALSE(a.SameGeometry(b));
  b = Resnet3x3();
  b.pad_left = b.pad_right = 0;
  EXPECT_FALSE(a.SameGeometry(b));
}

TEST(Conv2dParamsTest, ToStringIsBenchdnnLike) {
  EXPECT_EQ(Resnet3x3().ToString(), "mb1_ic64ih56iw56_oc64kh3kw3_sh1sw1_ph1pw1_dh1dw1_g1_nchw");
  Conv2dParams p = Resnet3x3();
  p.pad_top = 0, p.pad_right = 2;
  p.has_residual = true;
  p.activation = Activation::kClip, p.clip_min = -0.1f, p.clip_max = 6;
  p.dtype = DataType::kBf16;
  EXPECT_EQ(p.ToString(),
            "mb1_ic64ih56iw56_oc64kh3kw3_sh1sw1_pt0pb1pl1pr2_dh1dw1_g1_nchw_res_"
            "clip-0.100000001:6_bf16_outfp32");
  p.output_dtype = DataType::kBf16;
  p.activation = Activation::kGeluTanh;
  EXPECT_THAT(p.ToString(), testing::EndsWith("_res_gelu_bf16"));
}

// Each side pads only its own edge: P = floor((H + top + bottom - span) / stride) + 1.
TEST(Conv2dParamsTest, AsymmetricPaddingCountsEachSide) {
  Conv2dParams p = Resnet3x3();
  p.stride_h = p.stride_w = 2;
  p.pad_top = 0, p.pad_bottom = 1, p.pad_left = 1, p.pad_right = 0;  // TF SAME, stride 2
  ASSERT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.p(), 28);  // (56 + 1 - 3) / 2 + 1
  EXPECT_EQ(p.q(), 28);
  p.pad_bottom = 3;
  EXPECT_EQ(p.p(), 29);  // (56 + 3 - 3) / 2 + 1
  EXPECT_EQ(p.padded_input_bytes(), 4 * 64 * 59 * 57);
  p.pad_right = -1;
  EXPECT_THAT(p.Validate().message(), HasSubstr("pad_right must be >= 0; was -1"));
  p = Resnet3x3();
  p.r = 60;  // larger than 56 + 1 + 1
  EXPECT_THAT(p.Validate().message(),
              HasSubstr("larger than the padded input height H+pad_top+pad_bottom=58"));
}

// The epilogue and the datatypes are part of the batching key, and checked.
TEST(Conv2dParamsTest, EpilogueAndDatatypesAreKeyedAndValidated) {
  const Conv2dParams a = Resnet3x3();
  auto differs = [&](void (*mutate)(Conv2dParams&)) {
    Conv2dParams b = a;
    mutate(b);
    return !a.SameGeometry(b) && a.ShapeClass() != b.ShapeClass();
  };
  EXPECT_TRUE(differs([](Conv2dParams& b) { b.has_residual = true; }));
  EXPECT_TRUE(differs([](Conv2dParams& b) { b.activation = Activation::kRelu; }));
  EXPECT_TRUE(differs([](Conv2dParams& b) {
    b.activation = Activation::kClip, b.clip_min = 0, b.clip_max = 6.0000005f;
  }));
  EXPECT_TRUE(differs([](Conv2dParams& b) { b.dtype = b.output_dtype = DataType::kFp16; }));
  EXPECT_TRUE(differs([](Conv2dParams& b) { b.dtype = DataType::kFp16; }));
  EXPECT_TRUE(differs([](Conv2dParams& b) { b.pad_bottom = 2; }));

  Conv2dParams p = Resnet3x3();
  p.activation = Activation::kClip, p.clip_min = 1, p.clip_max = 0;
  EXPECT_THAT(p.Validate().message(), HasSubstr("clip needs clip_min <= clip_max"));
  p.clip_min = std::nanf("");
  EXPECT_FALSE(p.Validate().ok());
  p = Resnet3x3();
  p.output_dtype = DataType::kBf16;  // FP32 input: the output may only be FP32
  EXPECT_THAT(p.Validate().message(), HasSubstr("the output datatype of FP32 tensors must be FP32; was BF16"));
  p.dtype = DataType::kFp16;
  EXPECT_THAT(p.Validate().message(), HasSubstr("of FP16 tensors must be FP16 or FP32; was BF16"));
  p.dtype = DataType::kBf16;
  p.has_residual = true, p.has_bias = true;
  ASSERT_TRUE(p.Validate().ok());
  const int64_t out = 64 * 56 * 56;
  EXPECT_EQ(p.total_bytes(), 2 * (64 * 56 * 56 + 64 * 64 * 9 + 64 + out) + 2 * out);
  EXPECT_EQ(p.output_image_bytes(), 2 * out);
  EXPECT_EQ(p.residual_image_bytes(), 2 * out);
  EXPECT_EQ(p.input_image_bytes(), 2 * 64 * 56 * 56);
}

}  // namespace
}  // namespace sparkle
