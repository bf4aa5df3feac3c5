// Conv2dRef: the plain-loop direct convolution, accumulating in double. The test oracle for every
// other implementation; never on a production path. Handles both layouts, groups, dilation,
// per-side padding, stride, bias, the epilogue (residual, then the activation, in double) and
// every datatype: tensors are elements of p.dtype (the output of p.output_dtype), widened
// exactly to double, and the result is rounded once to the output's datatype (through FP32).
// p must be valid (Conv2dParams::Validate); residual must be set when p.has_residual.
#pragma once

#include "engine/core/conv2d_params.h"

namespace sparkle {

void Conv2dRef(const Conv2dParams& p, const void* input, const void* weight, const void* bias,
               void* output, const void* residual = nullptr);

}  // namespace sparkle
