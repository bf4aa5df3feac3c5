#include "engine/cpu/conv2d_ref.h"

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/shape_table.h"

namespace sparkle {
namespace {

// A convolution small enough to work out by hand.
struct HandCase {
  std::string name;
  Conv2dParams params;
  std::vector<float> input, weight, bias, expected;
};

std::vector<float> Iota(int count, float first) {
  std::vector<float> values(count);
  for (int i = 0; i < count; ++i) values[i] = first + i;
  return values;
}

std::vector<HandCase> HandCases() {
  const std::vector<float> one_to_nine = Iota(9, 1);  // 3×3 image 1..9, row-major
  const std::vector<float> ones_3x3(9, 1.0f);
  return {
      {"identity_kernel_pad_1",
       {.h = 3, .w = 3, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1},
       one_to_nine,
       {0, 0, 0, 0, 1, 0, 0, 0, 0},
       {},
       one_to_nine},
      {"box_sum_no_pad", {.h = 3, .w = 3, .r = 3, .s = 3}, one_to_nine, ones_3x3, {}, {45}},
      {"box_sum_pad_1",
       {.h = 3, .w = 3, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1},
       one_to_nine,
       ones_3x3,
       {},
       {12, 21, 16, 27, 45, 33, 24, 39, 28}},
      {"box_sum_stride_2_pad_1",
       {.h = 3, .w = 3, .r = 3, .s = 3, .stride_h = 2, .stride_w = 2, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1},
       one_to_nine,
       ones_3x3,
       {},
       {12, 16, 24, 28}},
      // Taps at rows and columns 0, 2, 4 of a 5×5 image holding 0..24.
      {"dilation_2",
       {.h = 5, .w = 5, .r = 3, .s = 3, .dilation_h = 2, .dilation_w = 2},
       Iota(25, 0),
       ones_3x3,
       {},
       {0 + 2 + 4 + 10 + 12 + 14 + 20 + 22 + 24}},
      {"kernel_1x3_pad_w_1",
       {.h = 1, .w = 5, .r = 1, .s = 3, .pad_left = 1, .pad_right = 1},
       {1, 2, 3, 4, 5},
       {1, 2, 3},
       {},
       {0 + 2 + 6, 1 + 4 + 9, 2 + 6 + 12, 3 + 8 + 15, 4 + 10 + 0}},
      {"stride_2x1_kernel_2x1",
       {.h = 4, .w = 2, .r = 2, .s = 1, .stride_h = 2},
       {1, 2, 3, 4, 5, 6, 7, 8},
       {10, 1},
       {},
       {13, 24, 57, 68}},
      // Output k = sum over c of input[c] * weight[k][c].
      {"channels_sum_1x1",
       {.c = 3, .h = 1, .w = 2, .k = 2},
       {1, 2, 10, 20, 100, 200},
       {1, 2, 3, 0, 0, 1},
       {},
       {321, 642, 100, 200}},
      // Two groups: output 0 sees only channel 0, output 1 only channel 1.
      {"groups_2",
       {.c = 2, .h = 1, .w = 2, .k = 2, .groups = 2},
       {1, 2, 10, 20},
       {2, 3},
       {},
       {2, 4, 30, 60}},
      // Depthwise with multiplier 2: outputs 0, 1 read channel 0; outputs 2, 3 channel 1.
      {"depthwise_multiplier_2",
       {.c = 2, .h = 1, .w = 1, .k = 4, .groups = 2},
       {5, 7},
       {1, 2, 3, 4},
       {},
       {5, 10, 21, 28}},
      {"bias",
       {.c = 1, .h = 1, .w = 3, .k = 2, .has_bias = true},
       {1, 2, 3},
       {1, -1},
       {0.5f, 10},
       {1.5f, 2.5f, 3.5f, 9, 8, 7}},
      // 1e8 + 1 - 1e8: 0 when accumulated in float, 1 in double.
      {"double_accumulation", {.c = 3, .h = 1, .w = 1}, {1e8f, 1, -1e8f}, {1, 1, 1}, {}, {1}},
      // NHWC: the two channels of each pixel are adjacent.
      {"nhwc_channels_sum",
       {.c = 2, .h = 1, .w = 2, .k = 1, .layout = Layout::kNHWC},
       {1, 10, 2, 20},
       {1, 3},
       {},
       {31, 62}},
      {"nhwc_bias_two_outputs",
       {.c = 1, .h = 1, .w = 2, .k = 2, .has_bias = true, .layout = Layout::kNHWC},
       {1, 2},
       {2, 3},
       {1, -1},
       {3, 2, 5, 5}},
  };
}

TEST(Conv2dRefTest, HandComputedCases) {
  for (const HandCase& c : HandCases()) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(c.params.Validate().ok()) << c.params.Validate();
    ASSERT_EQ(static_cast<int64_t>(c.input.size()), c.params.input_elements());
    ASSERT_EQ(static_cast<int64_t>(c.weight.size()), c.params.weight_elements());
    ASSERT_EQ(static_cast<int64_t>(c.bias.size()), c.params.bias_elements());
    ASSERT_EQ(static_cast<int64_t>(c.expected.size()), c.params.output_elements());
    std::vector<float> output(c.expected.size(), -999);
    Conv2dRef(c.params, c.input.data(), c.weight.data(), c.bias.empty() ? nullptr : c.bias.data(),
              output.data());
    EXPECT_EQ(output, c.expected);
  }
}

// [N, X, Y, Z] → [N, Z, X, Y] when to_channels_first, else [N, Y, Z, X] (the inverse).
std::vector<float> Transpose(const std::vector<float>& t, int64_t n, int64_t a, int64_t b,
                             int64_t c, bool to_channels_first) {
  std::vector<float> out(t.size());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t x = 0; x < a; ++x) {
      for (int64_t y = 0; y < b; ++y) {
        for (int64_t z = 0; z < c; ++z) {
          const int64_t from = ((i * a + x) * b + y) * c + z;
          const int64_t to =
              to_channels_first ? ((i * c + z) * a + x) * b + y : ((i * b + y) * c + z) * a + x;
          out[to] = t[from];
        }
      }
    }
  }
  return out;
}

// The NHWC path computes the very same sums as the NCHW one: bit-identical after transposing.
TEST(Conv2dRefTest, NhwcMatchesTransposedNchw) {
  const std::vector<Conv2dParams> cases = {
      {.n = 2, .c = 6, .h = 9, .w = 7, .k = 4, .r = 3, .s = 2, .stride_h = 2, .pad_top = 1, .pad_bottom = 1,
       .pad_left = 1, .pad_right = 1, .dilation_w = 2, .groups = 2, .has_bias = true},
      {.c = 5, .h = 6, .w = 6, .k = 3, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1},
      {.n = 3, .c = 4, .h = 1, .w = 1, .k = 8, .groups = 4, .has_bias = true},
  };
  for (const Conv2dParams& nchw : cases) {
    SCOPED_TRACE(nchw.ToString());
    Conv2dParams nhwc = nchw;
    nhwc.layout = Layout::kNHWC;
    const auto input = testing::RandomFloats(nchw.input_elements(), 1);
    const auto weight = testing::RandomFloats(nchw.weight_elements(), 2);
    const auto bias = testing::RandomFloats(nchw.k, 3);
    std::vector<float> out_nchw(nchw.output_elements()), out_nhwc(nchw.output_elements());
    Conv2dRef(nchw, input.data(), weight.data(), bias.data(), out_nchw.data());
    const auto input_nhwc = Transpose(input, nchw.n, nchw.c, nchw.h, nchw.w, false);
    Conv2dRef(nhwc, input_nhwc.data(), weight.data(), bias.data(), out_nhwc.data());
    EXPECT_EQ(Transpose(out_nhwc, nchw.n, nchw.p(), nchw.q(), nchw.k, true), out_nchw);
  }
}

// The tables every implementation is checked on: valid shapes under unique names.
TEST(Conv2dRefTest, ShapeTablesAreValid) {
  EXPECT_EQ(testing::LayerTable().size(), 11u);
  std::set<std::string> names;
  for (const testing::NamedShape& shape : testing::ShapeTable()) {
    EXPECT_TRUE(shape.params.Validate().ok()) << shape.name << ": " << shape.params.Validate();
    EXPECT_TRUE(names.insert(shape.name).second) << "duplicate " << shape.name;
  }
}

// Per-side padding, the epilogue (residual, then activation) and BF16/FP16 tensors, worked out
// by hand on a 2x2 image [1 2; 3 4] and a 1x1 weight of 2.
TEST(Conv2dRefTest, PerSidePaddingEpilogueAndDatatypes) {
  Conv2dParams p{.h = 2, .w = 2, .pad_top = 1, .pad_right = 1};
  const std::vector<float> input = {1, 2, 3, 4}, weight = {2};
  std::vector<float> out(6);
  ASSERT_EQ(p.p(), 3);
  ASSERT_EQ(p.q(), 3);
  out.resize(9);
  Conv2dRef(p, input.data(), weight.data(), nullptr, out.data());
  EXPECT_EQ(out, (std::vector<float>{0, 0, 0, 2, 4, 0, 6, 8, 0}));

  p.has_bias = true, p.has_residual = true, p.activation = Activation::kRelu;
  const std::vector<float> bias = {-5};
  const std::vector<float> residual = {1, 1, 1, 1, 1, 1, 1, 1, -1};
  Conv2dRef(p, input.data(), weight.data(), bias.data(), out.data(), residual.data());
  // relu(2x - 5 + residual): the padded zeros give relu(-4) = 0, 6 - 5 + 1 = 2, ...
  EXPECT_EQ(out, (std::vector<float>{0, 0, 0, 0, 0, 0, 2, 4, 0}));
  p.activation = Activation::kClip, p.clip_min = -1, p.clip_max = 3;
  Conv2dRef(p, input.data(), weight.data(), bias.data(), out.data(), residual.data());
  EXPECT_EQ(out, (std::vector<float>{-1, -1, -1, -1, 0, -1, 2, 3, -1}));

  // BF16 in, BF16 out: 1.00390625 rounds to 1 on the way in. Between 2 and 4 BF16's step is
  // 2^-6, so 2 + 2^-7 and 3 + 2^-7 are ties that round to the even neighbours 2 and 3 on the way
  // out; an FP32 output keeps them.
  Conv2dParams b{.h = 1, .w = 2, .has_bias = true};
  b.dtype = b.output_dtype = DataType::kBf16;
  const std::vector<uint16_t> in16 = {FloatToBf16(1.00390625f), FloatToBf16(1.5f)};
  const std::vector<uint16_t> w16 = {FloatToBf16(2)}, b16 = {FloatToBf16(0.0078125f)};
  std::vector<uint16_t> out16(2);
  Conv2dRef(b, in16.data(), w16.data(), b16.data(), out16.data());
  EXPECT_EQ(Bf16ToFloat(out16[0]), 2.0f);
  EXPECT_EQ(Bf16ToFloat(out16[1]), 3.0f);
  b.output_dtype = DataType::kFp32;
  std::vector<float> out32(2);
  Conv2dRef(b, in16.data(), w16.data(), b16.data(), out32.data());
  EXPECT_EQ(out32, (std::vector<float>{2.0078125f, 3.0078125f}));
  // FP16: 1 + 2^-11 rounds to 1 (ties to even).
  b.dtype = b.output_dtype = DataType::kFp16;
  const std::vector<uint16_t> in_h = {FloatToFp16(1.00048828125f), FloatToFp16(1.5f)};
  const std::vector<uint16_t> w_h = {FloatToFp16(2)}, b_h = {FloatToFp16(0)};
  Conv2dRef(b, in_h.data(), w_h.data(), b_h.data(), out16.data());
  EXPECT_EQ(Fp16ToFloat(out16[0]), 2.0f);
  EXPECT_EQ(Fp16ToFloat(out16[1]), 3.0f);
}

}  // namespace
}  // namespace sparkle
