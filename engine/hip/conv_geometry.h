// ConvGeometry: Conv2dParams as the kernels take it, by value, in 32-bit ints (the kernels
// refuse shapes that need more: Int32IndexingReason). HIP-only header.
#pragma once

#include <hip/hip_runtime.h>

#include "engine/core/conv2d_params.h"

namespace sparkle::hip {

struct ConvGeometry {
  int n, c, h, w;          // input
  int k, r, s;             // output channels, kernel
  int p, q;                // output height, width
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;  // pad_h/pad_w: top/left (P, Q hold the rest)
  int groups, cg, kg;      // groups, input and output channels per group
  int m;                   // GEMM rows: n * p * q output pixels
  int kred;                // GEMM reduction: cg * r * s
};

// Requires p valid and Int32IndexingReason(p) == "".
inline ConvGeometry MakeConvGeometry(const Conv2dParams& p) {
  ConvGeometry g;
  g.n = static_cast<int>(p.n);
  g.c = static_cast<int>(p.c);
  g.h = static_cast<int>(p.h);
  g.w = static_cast<int>(p.w);
  g.k = static_cast<int>(p.k);
  g.r = static_cast<int>(p.r);
  g.s = static_cast<int>(p.s);
  g.p = static_cast<int>(p.p());
  g.q = static_cast<int>(p.q());
  g.stride_h = static_cast<int>(p.stride_h);
  g.stride_w = static_cast<int>(p.stride_w);
  g.pad_h = static_cast<int>(p.pad_top);
  g.pad_w = static_cast<int>(p.pad_left);
  g.dil_h = static_cast<int>(p.dilation_h);
  g.dil_w = static_cast<int>(p.dilation_w);
  g.groups = static_cast<int>(p.groups);
  g.cg = static_cast<int>(p.c / p.groups);
  g.kg = static_cast<int>(p.k / p.groups);
  g.m = g.n * g.p * g.q;
  g.kred = g.cg * g.r * g.s;
  return g;
}

}  // namespace sparkle::hip
