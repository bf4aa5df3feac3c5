// Conv2dParams: one 2-D convolution, independent of any backend: its geometry, its fused
// epilogue and its datatypes.
//
// Input [N, C, H, W] (or [N, H, W, C] when layout is kNHWC), weight [K, C/groups, R, S],
// optional bias [K], optional residual and output [N, K, P, Q] (or [N, P, Q, K]). The output is
//   activation(conv(input, weight) + bias + residual)
// computed with FP32 (or wider) accumulation whatever the datatype. Validate() checks every rule of
// docs/protocol.md's error table with overflow-checked arithmetic; the size accessors may only be
// called on validated params (they cannot overflow then).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "engine/core/activation.h"
#include "engine/core/data_type.h"

namespace sparkle {

enum class Layout { kNCHW, kNHWC };

const char* LayoutName(Layout layout);

struct Conv2dParams {
  int64_t n = 1, c = 1, h = 1, w = 1;  // input batch, channels, height, width
  int64_t k = 1, r = 1, s = 1;         // output channels, kernel height, kernel width
  int64_t stride_h = 1, stride_w = 1;  // >= 1
  // Zero padding per side, >= 0 (ONNX's pads [top, left, bottom, right] in another order).
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;  // >= 1 (1 = dense kernel)
  int64_t groups = 1;                  // divides c and k
  bool has_bias = false;
  Layout layout = Layout::kNCHW;

  // The epilogue, in this order: + residual (a tensor of the output's shape and layout, in
  // `dtype`), then the activation. clip_min <= clip_max bound kClip (ignored otherwise; 0).
  bool has_residual = false;
  Activation activation = Activation::kNone;
  float clip_min = 0, clip_max = 0;
  // Datatype of input, weight, bias and residual, and of the output: `dtype` or kFp32.
  DataType dtype = DataType::kFp32;
  DataType output_dtype = DataType::kFp32;

  // Sets the same padding on both sides of each axis.
  void SetPad(int64_t pad_h, int64_t pad_w) {
    pad_top = pad_bottom = pad_h;
    pad_left = pad_right = pad_w;
  }
  bool has_epilogue() const { return has_residual || activation != Activation::kNone; }

  // Largest accepted value of any single dimension and of every derived extent (padded input
  // H+pad_top+pad_bottom and W+pad_left+pad_right, dilated kernel, P, Q): oneDNN computes these in a C int, so a
  // larger value would fail descriptor creation (or wrap) instead of being refused here.
  static constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;

  // OK, or INVALID_ARGUMENT naming the first offending field and its value. Also checks that
  // the element counts of input, weight and output, padded_input_bytes() and
  // im2col_bytes() fit in int64 without wrap-around. Validity says nothing about cost: the
  // engine bounds flops(), bytes and scratch separately (EngineOptions).
  absl::Status Validate() const;

  // Output height P and width Q. Require Validate().ok().
  int64_t p() const;
  int64_t q() const;

  int64_t input_elements() const { return n * c * h * w; }
  int64_t weight_elements() const { return k * (c / groups) * r * s; }
  int64_t bias_elements() const { return has_bias ? k : 0; }
  int64_t output_elements() const { return n * k * p() * q(); }
  int64_t residual_elements() const { return has_residual ? output_elements() : 0; }
  // Bytes of one image of the input, output and residual (0 without one), in their datatypes:
  // the strides of a batch concatenated along N.
  int64_t input_image_bytes() const { return c * h * w * ElementSize(dtype); }
  int64_t output_image_bytes() const { return k * p() * q() * ElementSize(output_dtype); }
  int64_t residual_image_bytes() const {
    return has_residual ? k * p() * q() * ElementSize(dtype) : 0;
  }
  // Bytes of input + weight + bias + residual (in dtype) + output (in output_dtype).
  int64_t total_bytes() const;
  // Multiply-adds × 2 of the direct algorithm (the FLOP count every figure uses).
  double flops() const;
  // Cost bounds of the memory a backend may need besides the job's own tensors (FP32 bytes,
  // whatever the datatype: a backend may widen to FP32): the input with its padding
  // materialised, N*C*(H+pad_top+pad_bottom)*(W+pad_left+pad_right)*4, and one
  // image-group's im2col matrix, (C/groups)*R*S*P*Q*4, the largest per-thread scratch of a
  // gemm-based convolution. Require Validate().ok() (they cannot overflow then).
  int64_t padded_input_bytes() const;
  int64_t im2col_bytes() const;

  // benchdnn-like, e.g. "mb1_ic64ih56iw56_oc64kh3kw3_sh1sw1_ph1pw1_dh1dw1_g1_bias_nchw"; the
  // dilation is written as the dilation itself (dh1 = dense), unlike benchdnn's dh0.
  // Asymmetric padding is written "pt0pb1pl0pr1"; then, when not the defaults, "_res", the
  // activation ("_relu", "_clip-1:6" with clip's bounds in round-trip precision), and the
  // datatypes ("_bf16", "_bf16_outfp32"). Distinct params give distinct strings (a cache key).
  std::string ToString() const;
  // The same without the batch: the batching key's geometry part.
  std::string ShapeClass() const;

  // True when the two differ only in n (jobs that can be concatenated along N): every other
  // field, epilogue and datatypes included, is equal.
  bool SameGeometry(const Conv2dParams& o) const;

};

// Every field of g but n into an absl hash state (batching and placement keys): equal under
// SameGeometry means equal hash.
template <typename H>
H HashWithoutN(H h, const Conv2dParams& g) {
  return H::combine(std::move(h), g.c, g.h, g.w, g.k, g.r, g.s, g.stride_h, g.stride_w, g.pad_top,
                    g.pad_bottom, g.pad_left, g.pad_right, g.dilation_h, g.dilation_w, g.groups,
                    g.has_bias, g.layout, g.has_residual, g.activation, g.clip_min, g.clip_max,
                    g.dtype, g.output_dtype);
}

}  // namespace sparkle
