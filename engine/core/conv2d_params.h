// Conv2dParams: the geometry of one 2-D convolution (FP32), independent of any backend.
//
// Input [N, C, H, W] (or [N, H, W, C] when layout is kNHWC), weight [K, C/groups, R, S],
// optional bias [K], output [N, K, P, Q] (or [N, P, Q, K]). Validate() checks every rule of
// docs/protocol.md's error table with overflow-checked arithmetic; the size accessors may only be
// called on validated params (they cannot overflow then).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace sparkle {

enum class Layout { kNCHW, kNHWC };

const char* LayoutName(Layout layout);

struct Conv2dParams {
  int64_t n = 1, c = 1, h = 1, w = 1;  // input batch, channels, height, width
  int64_t k = 1, r = 1, s = 1;         // output channels, kernel height, kernel width
  int64_t stride_h = 1, stride_w = 1;  // >= 1
  int64_t pad_h = 0, pad_w = 0;        // >= 0, applied on both sides
  int64_t dilation_h = 1, dilation_w = 1;  // >= 1 (1 = dense kernel)
  int64_t groups = 1;                  // divides c and k
  bool has_bias = false;
  Layout layout = Layout::kNCHW;

  // Largest accepted value of any single dimension and of every derived extent (padded input
  // H+2*pad_h and W+2*pad_w, dilated kernel, P, Q): oneDNN computes these in a C int, so a
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
  // Bytes of input + weight + bias + output (FP32).
  int64_t total_bytes() const;
  // Multiply-adds × 2 of the direct algorithm (the FLOP count every figure uses).
  double flops() const;
  // Cost bounds of the memory a backend may need besides the job's own tensors (FP32 bytes):
  // the input with its padding materialised, N*C*(H+2*pad_h)*(W+2*pad_w)*4, and one
  // image-group's im2col matrix, (C/groups)*R*S*P*Q*4, the largest per-thread scratch of a
  // gemm-based convolution. Require Validate().ok() (they cannot overflow then).
  int64_t padded_input_bytes() const;
  int64_t im2col_bytes() const;

  // benchdnn-like, e.g. "mb1_ic64ih56iw56_oc64kh3kw3_sh1sw1_ph1pw1_dh1dw1_g1_bias_nchw"; the
  // dilation is written as the dilation itself (dh1 = dense), unlike benchdnn's dh0.
  std::string ToString() const;
  // The same without the batch: the batching key's geometry part.
  std::string ShapeClass() const;

  // True when the two differ only in n (jobs that can be concatenated along N).
  bool SameGeometry(const Conv2dParams& o) const;
};

}  // namespace sparkle
