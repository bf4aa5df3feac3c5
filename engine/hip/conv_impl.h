// ConvImpl: one way of running a conv2d on the device (a kernel variant with one tile config,
// or a platform library). ConvKernels keeps every implementation in one ordered list and
// tunes among those that support a shape. HIP-only header: include it from .hip files only.
#pragma once

#include <hip/hip_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/conv2d_params.h"

namespace sparkle::hip {

// Device pointers of one convolution, all FP32 whatever p.dtype says (ConvKernels::LaunchTyped
// widens other datatypes first): input and output in p.layout, weight [K, C/groups, R, S], bias
// [K] or null, residual (the output's shape and layout) when p.has_residual, else null. Every
// implementation applies p's epilogue in its store (conv_epilogue.h):
//   output = activation(conv + bias + residual).
struct DevConvArgs {
  const float* input;
  const float* weight;
  const float* bias;
  float* output;
  const float* residual = nullptr;
};

class ConvImpl {
 public:
  virtual ~ConvImpl() = default;
  // Stable and unique: it keys the tuning cache file, e.g. "igemm_3x3s1_128x128x8_t8x8".
  virtual const std::string& name() const = 0;
  // "" when this implementation runs p (p valid), else why not, in a few words.
  virtual std::string Supports(const Conv2dParams& p) const = 0;
  // Enqueues the convolution on `stream`; requires Supports(p) == "". Returns the launch error.
  virtual hipError_t Launch(const Conv2dParams& p, const DevConvArgs& a,
                            hipStream_t stream) = 0;
};

using ConvImplList = std::vector<std::unique_ptr<ConvImpl>>;

// The kernel sizes use 32-bit indices: "" when every tensor of p has fewer than 2^31 elements
// and the grid fits, else the reason. Shared by the hand-written kernels.
std::string Int32IndexingReason(const Conv2dParams& p);

// The tiled implicit-GEMM kernels (conv_implicit_gemm.hip): 1×1, 3×3 stride 1 and general
// variants, each with several tile configs, fastest first by expectation.
void AppendImplicitGemmImpls(ConvImplList* list);
// The direct depthwise kernels (conv_depthwise.hip): C/groups == 1, any channel multiplier.
void AppendDepthwiseImpls(ConvImplList* list);
#if defined(SPARKLE_HAVE_CUDNN)
// cuDNN's forward convolution (FP32 math, TF32 off), NVIDIA builds with cuDNN only.
void AppendCudnnImpl(ConvImplList* list);
#endif

}  // namespace sparkle::hip
