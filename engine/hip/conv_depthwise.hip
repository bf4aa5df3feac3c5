// The direct depthwise conv2d kernels: C/groups == 1 (groups == C), any channel multiplier
// K/C, any stride, padding and dilation. Depthwise layers do R·S multiply-adds per output, so
// they are bound by memory, not arithmetic: one thread per output element, consecutive threads
// on consecutive output addresses (q in NCHW, k in NHWC) so that both the input reads and the
// output writes coalesce, neighbouring taps shared through the cache. The 3×3 variant unrolls
// the taps with constant offsets. Padding may differ per side (the top/left pads are the
// kernel's; P and Q imply the rest); the store applies the fused epilogue (conv_epilogue.h).
#include <hip/hip_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "engine/hip/conv_epilogue.h"
#include "engine/hip/conv_geometry.h"
#include "engine/hip/conv_impl.h"

namespace sparkle::hip {
namespace {

constexpr int kDepthwiseThreads = 256;

// kFixedRS: 3 for the 3×3 variant (R and S are constants), 0 for any kernel size.
template <int kFixedRS, bool kNhwc>
__global__ void __launch_bounds__(kDepthwiseThreads)
    DepthwiseConvKernel(ConvGeometry g, const float* __restrict__ input,
                        const float* __restrict__ weight, const float* __restrict__ bias,
                        float* __restrict__ output, ConvEpilogue epilogue) {
  const int R = kFixedRS != 0 ? kFixedRS : g.r;
  const int S = kFixedRS != 0 ? kFixedRS : g.s;
  const int multiplier = g.kg;  // output channels per input channel (C/groups == 1)
  const int total = g.n * g.k * g.p * g.q;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kDepthwiseThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kDepthwiseThreads + threadIdx.x;
       i < total; i += step) {
    const int idx = static_cast<int>(i);  // < total < 2^31
    // idx is the output's own offset: decode it in the layout's order.
    int img, k, op, oq, t;
    if (kNhwc) {
      k = idx % g.k;
      t = idx / g.k;
      oq = t % g.q;
      t /= g.q;
      op = t % g.p;
      img = t / g.p;
    } else {
      oq = idx % g.q;
      t = idx / g.q;
      op = t % g.p;
      t /= g.p;
      k = t % g.k;
      img = t / g.k;
    }
    const int c = k / multiplier;
    const int ih0 = op * g.stride_h - g.pad_h;
    const int iw0 = oq * g.stride_w - g.pad_w;
    const float* w = weight + k * R * S;
    float acc = bias != nullptr ? bias[k] : 0.0f;
    for (int r = 0; r < R; ++r) {  // fully unrolled by the compiler when R, S are constants
      const int ih = ih0 + r * g.dil_h;
      if (ih < 0 || ih >= g.h) continue;
      for (int s = 0; s < S; ++s) {
        const int iw = iw0 + s * g.dil_w;
        if (iw < 0 || iw >= g.w) continue;
        const int in_idx = kNhwc ? ((img * g.h + ih) * g.w + iw) * g.c + c
                                 : ((img * g.c + c) * g.h + ih) * g.w + iw;
        acc += input[in_idx] * w[r * S + s];
      }
    }
    output[idx] = ApplyConvEpilogue(epilogue, acc, idx);
  }
}

template <int kFixedRS>
class DepthwiseImpl final : public ConvImpl {
 public:
  DepthwiseImpl()
      : name_(kFixedRS != 0 ? "depthwise_3x3" : "depthwise_direct") {}

  const std::string& name() const override { return name_; }

  std::string Supports(const Conv2dParams& p) const override {
    if (p.groups != p.c) return "needs groups == C (depthwise)";
    if (kFixedRS != 0 && !(p.r == kFixedRS && p.s == kFixedRS)) return "needs a 3x3 kernel";
    return Int32IndexingReason(p);
  }

  hipError_t Launch(const Conv2dParams& p, const DevConvArgs& a, hipStream_t stream) override {
    const ConvGeometry g = MakeConvGeometry(p);
    // A grid-stride loop: enough blocks to fill any device, capped well inside the grid limit.
    const int64_t blocks = (p.output_elements() + kDepthwiseThreads - 1) / kDepthwiseThreads;
    const dim3 grid(static_cast<unsigned>(blocks < 65536 ? blocks : 65536));
    const dim3 block(kDepthwiseThreads);
    const ConvEpilogue epilogue = MakeConvEpilogue(p, a.residual);
    if (p.layout == Layout::kNHWC) {
      hipLaunchKernelGGL((DepthwiseConvKernel<kFixedRS, true>), grid, block, 0, stream, g,
                         a.input, a.weight, a.bias, a.output, epilogue);
    } else {
      hipLaunchKernelGGL((DepthwiseConvKernel<kFixedRS, false>), grid, block, 0, stream, g,
                         a.input, a.weight, a.bias, a.output, epilogue);
    }
    return hipGetLastError();
  }

 private:
  std::string name_;
};

}  // namespace

void AppendDepthwiseImpls(ConvImplList* list) {
  list->push_back(std::make_unique<DepthwiseImpl<3>>());
  list->push_back(std::make_unique<DepthwiseImpl<0>>());
}

}  // namespace sparkle::hip
