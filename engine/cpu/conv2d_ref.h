// Conv2dRef: the plain-loop direct convolution, accumulating in double. The test oracle for every
// other implementation; never on a production path. Handles both layouts, groups, dilation,
// padding, stride and bias. p must be valid (Conv2dParams::Validate).
#pragma once

#include "engine/core/conv2d_params.h"

namespace sparkle {

void Conv2dRef(const Conv2dParams& p, const float* input, const float* weight, const float* bias,
               float* output);

}  // namespace sparkle
