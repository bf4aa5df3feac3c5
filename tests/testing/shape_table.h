// The shared shape table: the ResNet/VGG/MobileNet layers of cpu-conv-anchors.md plus edge
// cases (grouped, depthwise, dilated, asymmetric, 1×1 images, kernel = image, C=1, K=1, bias
// on/off, NCHW and NHWC). Every implementation is checked against Conv2dRef on it.
#pragma once

#include <string>
#include <vector>

#include "engine/core/conv2d_params.h"

namespace sparkle::testing {

struct NamedShape {
  std::string name;
  Conv2dParams params;
};

// The anchors' layer table (name N C H W K R=S stride pad groups), as in cpu-conv-anchors.md.
const std::vector<NamedShape>& LayerTable();
// LayerTable() plus the edge cases, each valid. Sizes stay small enough for Conv2dRef to check
// the whole table in seconds.
const std::vector<NamedShape>& ShapeTable();

// Deterministic pseudo-random floats in [-1, 1).
std::vector<float> RandomFloats(int64_t count, uint32_t seed);
// Relative L2 error ||a - b|| / ||b|| (0 when both are zero).
double RelativeL2Error(const float* a, const float* b, int64_t count);

}  // namespace sparkle::testing
