#include "tests/testing/shape_table.h"

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

namespace sparkle::testing {
namespace {

// One row of the anchors' table: name N C H W K R=S stride pad groups (NCHW, no bias).
NamedShape Layer(std::string name, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                 int64_t rs, int64_t stride, int64_t pad, int64_t groups) {
  Conv2dParams p;
  p.n = n;
  p.c = c;
  p.h = h;
  p.w = w;
  p.k = k;
  p.r = p.s = rs;
  p.stride_h = p.stride_w = stride;
  p.SetPad(pad, pad);
  p.groups = groups;
  return {std::move(name), p};
}

NamedShape Batch(NamedShape shape, int64_t n) {
  shape.name += "_b" + std::to_string(n);
  shape.params.n = n;
  return shape;
}

NamedShape Nhwc(NamedShape shape) {
  shape.name += "_nhwc";
  shape.params.layout = Layout::kNHWC;
  return shape;
}

NamedShape WithBias(NamedShape shape) {
  shape.name += "_bias";
  shape.params.has_bias = true;
  return shape;
}

std::vector<NamedShape> BuildLayerTable() {
  return {
      Layer("resnet_conv1", 1, 3, 224, 224, 64, 7, 2, 3, 1),
      Layer("resnet_3x3_56", 1, 64, 56, 56, 64, 3, 1, 1, 1),
      Layer("resnet_1x1_56", 1, 64, 56, 56, 256, 1, 1, 0, 1),
      Layer("resnet_3x3_28", 1, 128, 28, 28, 128, 3, 1, 1, 1),
      Layer("resnet_3x3_14", 1, 256, 14, 14, 256, 3, 1, 1, 1),
      Layer("resnet_3x3_7", 1, 512, 7, 7, 512, 3, 1, 1, 1),
      Layer("resnet_3x3_56_b8", 8, 64, 56, 56, 64, 3, 1, 1, 1),
      Layer("small_3x3", 1, 16, 32, 32, 16, 3, 1, 1, 1),
      Layer("mid_3x3", 4, 32, 64, 64, 32, 3, 1, 1, 1),
      Layer("mobilenet_dw", 1, 128, 56, 56, 128, 3, 1, 1, 128),
      Layer("vgg_3x3_224", 1, 64, 224, 224, 64, 3, 1, 1, 1),
  };
}

NamedShape FindLayer(const std::string& name) {
  for (const NamedShape& layer : LayerTable()) {
    if (layer.name == name) return layer;
  }
  std::abort();  // A typo in this file.
}

// The edge cases. Geometry the layer table never exercises: every field away from its
// common value at least once, in both layouts, with and without bias.
std::vector<NamedShape> BuildEdgeCases() {
  std::vector<NamedShape> shapes;
  auto add = [&](std::string name, Conv2dParams p) { shapes.push_back({std::move(name), p}); };
  Conv2dParams p;

  // Grouped and depthwise.
  p = Conv2dParams{.n = 2, .c = 16, .h = 15, .w = 17, .k = 32, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1,
                   .pad_left = 1, .pad_right = 1, .groups = 4, .has_bias = true};
  add("grouped_g4_bias", p);
  p.layout = Layout::kNHWC;
  add("grouped_g4_bias_nhwc", p);
  p = Conv2dParams{.c = 32, .h = 28, .w = 28, .k = 32, .r = 3, .s = 3, .stride_h = 2,
                   .stride_w = 2, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1, .groups = 32, .has_bias = true};
  add("depthwise_s2_bias", p);
  p = Conv2dParams{.n = 2, .c = 16, .h = 19, .w = 13, .k = 32, .r = 5, .s = 5, .pad_top = 2, .pad_bottom = 2,
                   .pad_left = 2, .pad_right = 2, .groups = 16};
  add("depthwise_multiplier2_5x5", p);
  p.layout = Layout::kNHWC;
  add("depthwise_multiplier2_5x5_nhwc", p);

  // Dilation.
  p = Conv2dParams{.c = 8, .h = 20, .w = 20, .k = 16, .r = 3, .s = 3, .pad_top = 2, .pad_bottom = 2, .pad_left = 2, .pad_right = 2,
                   .dilation_h = 2, .dilation_w = 2};
  add("dilated_d2", p);
  p = Conv2dParams{.n = 2, .c = 8, .h = 23, .w = 19, .k = 8, .r = 3, .s = 3, .pad_top = 3, .pad_bottom = 3,
                   .pad_left = 3, .pad_right = 3, .dilation_h = 3, .dilation_w = 3, .has_bias = true,
                   .layout = Layout::kNHWC};
  add("dilated_d3_bias_nhwc", p);
  p = Conv2dParams{.c = 12, .h = 17, .w = 21, .k = 24, .r = 3, .s = 3, .stride_h = 2,
                   .pad_top = 1, .pad_bottom = 1, .pad_left = 3, .pad_right = 3, .dilation_h = 2, .dilation_w = 3, .groups = 2};
  add("dilated_2x3_strided_grouped", p);

  // Asymmetric kernels, strides and pads.
  p = Conv2dParams{.c = 16, .h = 12, .w = 20, .k = 16, .r = 1, .s = 3, .pad_left = 1, .pad_right = 1};
  add("kernel_1x3", p);
  p = Conv2dParams{.n = 2, .c = 16, .h = 20, .w = 12, .k = 8, .r = 5, .s = 3, .stride_h = 2,
                   .pad_top = 2, .pad_bottom = 2, .has_bias = true, .layout = Layout::kNHWC};
  add("kernel_5x3_stride_2x1_pad_2x0_bias_nhwc", p);
  p = Conv2dParams{.c = 8, .h = 16, .w = 24, .k = 16, .r = 3, .s = 3, .stride_h = 1,
                   .stride_w = 2, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1};
  add("stride_1x2", p);
  p = Conv2dParams{.c = 8, .h = 25, .w = 25, .k = 8, .r = 2, .s = 2, .stride_h = 3,
                   .stride_w = 3};
  add("stride_3_exceeds_kernel_2", p);
  p = Conv2dParams{.c = 8, .h = 6, .w = 6, .k = 8, .pad_top = 2, .pad_bottom = 2, .pad_left = 1, .pad_right = 1, .has_bias = true};
  add("pad_around_1x1_kernel_bias", p);

  // 1×1 in NCHW, which runs as an sgemm per image (>= 64 pixels), batched.
  p = Conv2dParams{.n = 3, .c = 24, .h = 9, .w = 8, .k = 40, .has_bias = true};
  add("pointwise_b3_9x8_bias", p);

  // Degenerate sizes.
  p = Conv2dParams{.n = 3, .c = 64, .h = 1, .w = 1, .k = 32, .has_bias = true};
  add("image_1x1_kernel_1x1_bias", p);
  p = Conv2dParams{.n = 2, .c = 32, .h = 1, .w = 1, .k = 16, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1,
                   .pad_left = 1, .pad_right = 1};
  add("image_1x1_kernel_3x3_pad_1", p);
  p.layout = Layout::kNHWC;
  add("image_1x1_kernel_3x3_pad_1_nhwc", p);
  p = Conv2dParams{.n = 2, .c = 32, .h = 7, .w = 7, .k = 64, .r = 7, .s = 7, .has_bias = true};
  add("kernel_equals_image_7x7_bias", p);
  p.layout = Layout::kNHWC;
  add("kernel_equals_image_7x7_bias_nhwc", p);
  p = Conv2dParams{.c = 1, .h = 28, .w = 28, .k = 8, .r = 5, .s = 5, .pad_top = 2, .pad_bottom = 2, .pad_left = 2, .pad_right = 2,
                   .has_bias = true};
  add("c1_5x5_bias", p);
  p = Conv2dParams{.c = 16, .h = 14, .w = 14, .k = 1, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1};
  add("k1_3x3", p);
  p = Conv2dParams{.c = 1, .h = 9, .w = 11, .k = 1, .r = 3, .s = 3};
  add("c1_k1_3x3", p);
  p = Conv2dParams{.n = 3, .c = 7, .h = 13, .w = 11, .k = 5, .r = 3, .s = 3, .stride_h = 2,
                   .stride_w = 2, .pad_top = 1, .pad_bottom = 1, .pad_left = 1, .pad_right = 1, .has_bias = true};
  add("odd_sizes_s2_bias", p);
  p.layout = Layout::kNHWC;
  add("odd_sizes_s2_bias_nhwc", p);

  // 3×3 stride 1: the Winograd candidates, at sizes that do not tile evenly.
  p = Conv2dParams{.n = 3, .c = 32, .h = 13, .w = 9, .k = 48, .r = 3, .s = 3, .pad_top = 1, .pad_bottom = 1,
                   .pad_left = 1, .pad_right = 1, .has_bias = true};
  add("wino_odd_13x9_bias", p);
  p.layout = Layout::kNHWC;
  add("wino_odd_13x9_bias_nhwc", p);
  p = Conv2dParams{.n = 2, .c = 64, .h = 10, .w = 10, .k = 64, .r = 3, .s = 3};
  add("wino_no_pad_10x10", p);
  return shapes;
}

std::vector<NamedShape> BuildShapeTable() {
  std::vector<NamedShape> shapes;
  for (const NamedShape& layer : LayerTable()) {
    // The two largest layers (1.8 and 3.7 GFLOP) would take Conv2dRef ~4 s, more than the
    // rest of the table together; reduced versions of their geometry stand in below.
    if (layer.name == "resnet_3x3_56_b8" || layer.name == "vgg_3x3_224") continue;
    shapes.push_back(layer);
  }
  shapes.push_back(Layer("resnet_3x3_56_b8_reduced_b2_h28", 2, 64, 28, 28, 64, 3, 1, 1, 1));
  shapes.push_back(Layer("vgg_3x3_224_reduced_h40", 1, 64, 40, 40, 64, 3, 1, 1, 1));
  // NHWC, bias and batch variants of the real layers.
  shapes.push_back(Nhwc(FindLayer("resnet_conv1")));
  shapes.push_back(WithBias(FindLayer("resnet_1x1_56")));
  shapes.push_back(WithBias(Nhwc(FindLayer("resnet_3x3_28"))));
  shapes.push_back(Nhwc(Batch(FindLayer("resnet_3x3_7"), 2)));
  shapes.push_back(Nhwc(FindLayer("small_3x3")));
  shapes.push_back(WithBias(Nhwc(FindLayer("mobilenet_dw"))));
  for (NamedShape& shape : BuildEdgeCases()) shapes.push_back(std::move(shape));
  return shapes;
}

}  // namespace

const std::vector<NamedShape>& LayerTable() {
  static const auto* table = new std::vector<NamedShape>(BuildLayerTable());
  return *table;
}

const std::vector<NamedShape>& ShapeTable() {
  static const auto* table = new std::vector<NamedShape>(BuildShapeTable());
  return *table;
}

std::vector<float> RandomFloats(int64_t count, uint32_t seed) {
  // xorshift32: deterministic on every platform, unlike the <random> distributions.
  uint32_t state = seed == 0 ? 0x9e3779b9u : seed;
  std::vector<float> values(count);
  for (float& v : values) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    v = static_cast<float>(state >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
  return values;
}

double RelativeL2Error(const float* a, const float* b, int64_t count) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff += d * d;
    norm += static_cast<double>(b[i]) * b[i];
  }
  if (norm == 0) return diff == 0 ? 0 : INFINITY;
  return std::sqrt(diff / norm);
}

}  // namespace sparkle::testing
