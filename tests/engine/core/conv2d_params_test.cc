#include "engine/core/conv2d_params.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sparkle {
namespace {

using ::testing::HasSubstr;

Conv2dParams Resnet3x3() {
  Conv2dParams p;
  p.n = 1, p.c = 64, p.h = 56, p.w = 56, p.k = 64, p.r = 3, p.s = 3, p.pad_h = 1, p.pad_w = 1;
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
      {"negative pad", [](Conv2dParams& p) { p.pad_h = -1; }, "pad_h must be >= 0; was -1"},
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
      {"padded width beyond int", [](Conv2dParams& p) { p.pad_w = int64_t{1} << 30; },
       "padded input width W+2*pad_w must be <= 2^31-1"},
      {"dilated kernel beyond int",
       [](Conv2dParams& p) { p.dilation_h = int64_t{1} << 30; },
       "dilated kernel height (R-1)*dilation_h+1 must be <= 2^31-1"},
      {"im2col overflows",
       [](Conv2dParams& p) {
         p.c = 16, p.k = 1;
         p.h = p.w = 1 << 16;
         p.r = p.s = 1 << 15;
         p.pad_h = p.pad_w = 0;
       },
       "im2col (C/groups)*R*S*P*Q overflows"},
      {"input overflows",
       [](Conv2dParams& p) {
         p.n = p.c = p.h = p.w = (int64_t{1} << 31) - 1;
         p.pad_h = p.pad_w = 0;
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
  Conv2dParams hostile{.k = 2, .pad_w = 1 << 20};
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
  b.pad_w = 0;
  EXPECT_FALSE(a.SameGeometry(b));
}

TEST(Conv2dParamsTest, ToStringIsBenchdnnLike) {
  EXPECT_EQ(Resnet3x3().ToString(), "mb1_ic64ih56iw56_oc64kh3kw3_sh1sw1_ph1pw1_dh1dw1_g1_nchw");
}

}  // namespace
}  // namespace sparkle
