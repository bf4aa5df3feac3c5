#include "engine/core/conv2d_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

namespace sparkle {
namespace {

absl::Status Invalid(const char* field, int64_t value, const char* rule) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", rule, "; was ", value));
}

// a * b * c * d without wrap-around, or false.
bool CheckedProduct(std::initializer_list<int64_t> factors, int64_t* out) {
  int64_t acc = 1;
  for (int64_t f : factors) {
    if (__builtin_mul_overflow(acc, f, &acc)) return false;
  }
  *out = acc;
  return true;
}

// Output extent of one axis (docs/protocol.md): floor((in + pads - span) / stride) + 1, where
// pads is the sum of both sides' padding and span the dilated kernel.
int64_t OutDim(int64_t in, int64_t pads, int64_t dilation, int64_t kernel, int64_t stride) {
  return (in + pads - dilation * (kernel - 1) - 1) / stride + 1;
}

}  // namespace

const char* LayoutName(Layout layout) { return layout == Layout::kNHWC ? "NHWC" : "NCHW"; }

absl::Status Conv2dParams::Validate() const {
  struct Dim {
    const char* name;
    int64_t value;
    int64_t min;
  };
  const Dim dims[] = {
      {"N", n, 1},           {"C", c, 1},           {"H", h, 1},
      {"W", w, 1},           {"K", k, 1},           {"R", r, 1},
      {"S", s, 1},           {"stride_h", stride_h, 1}, {"stride_w", stride_w, 1},
      {"pad_top", pad_top, 0}, {"pad_bottom", pad_bottom, 0}, {"pad_left", pad_left, 0},
      {"pad_right", pad_right, 0}, {"dilation_h", dilation_h, 1},
      {"dilation_w", dilation_w, 1}, {"groups", groups, 1},
  };
  for (const Dim& d : dims) {
    if (d.value < d.min) return Invalid(d.name, d.value, d.min == 0 ? ">= 0" : ">= 1");
    if (d.value > kMaxDim) return Invalid(d.name, d.value, "<= 2^31-1");
  }
  if (c % groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("groups (", groups, ") must divide the input channels C (", c, ")"));
  }
  if (k % groups != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("groups (", groups, ") must divide the output channels K (", k, ")"));
  }
  if (activation == Activation::kClip &&
      (std::isnan(clip_min) || std::isnan(clip_max) || clip_min > clip_max)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "clip needs clip_min <= clip_max; were ", clip_min, " and ", clip_max));
  }
  if (output_dtype != dtype && output_dtype != DataType::kFp32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the output datatype of ", DataTypeName(dtype), " tensors must be ", DataTypeName(dtype),
        dtype == DataType::kFp32 ? "" : " or FP32", "; was ", DataTypeName(output_dtype)));
  }
  // Every value is < 2^31 here, so the padded extents and dilated kernels fit in int64; they
  // must also fit the int oneDNN computes them in.
  const int64_t span_h = dilation_h * (r - 1) + 1, span_w = dilation_w * (s - 1) + 1;
  const int64_t padded_h = h + pad_top + pad_bottom, padded_w = w + pad_left + pad_right;
  const struct {
    const char* name;
    int64_t value;
  } extents[] = {{"padded input height H+pad_top+pad_bottom", padded_h},
                 {"padded input width W+pad_left+pad_right", padded_w},
                 {"dilated kernel height (R-1)*dilation_h+1", span_h},
                 {"dilated kernel width (S-1)*dilation_w+1", span_w}};
  for (const auto& e : extents) {
    if (e.value > kMaxDim) return Invalid(e.name, e.value, "<= 2^31-1");
  }
  if (span_h > padded_h) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel height R=", r, " (dilation ", dilation_h, ", extent ", span_h,
        ") is larger than the padded input height H+pad_top+pad_bottom=", padded_h));
  }
  if (span_w > padded_w) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel width S=", s, " (dilation ", dilation_w, ", extent ", span_w,
        ") is larger than the padded input width W+pad_left+pad_right=", padded_w));
  }
  int64_t elems;
  if (!CheckedProduct({n, c, h, w, 4}, &elems)) {
    return absl::InvalidArgumentError(absl::StrCat("input N*C*H*W overflows: N=", n, " C=", c,
                                                   " H=", h, " W=", w));
  }
  if (!CheckedProduct({k, c / groups, r, s, 4}, &elems)) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight K*(C/groups)*R*S overflows: K=", k, " C/groups=", c / groups,
                     " R=", r, " S=", s));
  }
  const int64_t out_p = OutDim(h, pad_top + pad_bottom, dilation_h, r, stride_h);
  const int64_t out_q = OutDim(w, pad_left + pad_right, dilation_w, s, stride_w);
  if (!CheckedProduct({n, k, out_p, out_q, 4}, &elems)) {
    return absl::InvalidArgumentError(absl::StrCat("output N*K*P*Q overflows: N=", n, " K=", k,
                                                   " P=", out_p, " Q=", out_q));
  }
  if (!CheckedProduct({n, c, padded_h, padded_w, 4}, &elems)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "padded input N*C*(H+pad_top+pad_bottom)*(W+pad_left+pad_right) overflows: N=", n,
        " C=", c, " padded H=", padded_h, " padded W=", padded_w));
  }
  if (!CheckedProduct({c / groups, r, s, out_p, out_q, 4}, &elems)) {
    return absl::InvalidArgumentError(
        absl::StrCat("im2col (C/groups)*R*S*P*Q overflows: C/groups=", c / groups, " R=", r,
                     " S=", s, " P=", out_p, " Q=", out_q));
  }
  return absl::OkStatus();
}

int64_t Conv2dParams::p() const {
  return OutDim(h, pad_top + pad_bottom, dilation_h, r, stride_h);
}
int64_t Conv2dParams::q() const {
  return OutDim(w, pad_left + pad_right, dilation_w, s, stride_w);
}

int64_t Conv2dParams::total_bytes() const {
  return ElementSize(dtype) *
             (input_elements() + weight_elements() + bias_elements() + residual_elements()) +
         ElementSize(output_dtype) * output_elements();
}

int64_t Conv2dParams::padded_input_bytes() const {
  return 4 * n * c * (h + pad_top + pad_bottom) * (w + pad_left + pad_right);
}

int64_t Conv2dParams::im2col_bytes() const { return 4 * (c / groups) * r * s * p() * q(); }

double Conv2dParams::flops() const {
  return 2.0 * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(p()) *
         static_cast<double>(q()) * static_cast<double>(c / groups) * static_cast<double>(r) *
         static_cast<double>(s);
}

std::string Conv2dParams::ShapeClass() const {
  std::string out = absl::StrCat("ic", c, "ih", h, "iw", w, "_oc", k, "kh", r, "kw", s, "_sh",
                                 stride_h, "sw", stride_w);
  if (pad_top == pad_bottom && pad_left == pad_right) {
    absl::StrAppend(&out, "_ph", pad_top, "pw", pad_left);
  } else {
    absl::StrAppend(&out, "_pt", pad_top, "pb", pad_bottom, "pl", pad_left, "pr", pad_right);
  }
  absl::StrAppend(&out, "_dh", dilation_h, "dw", dilation_w, "_g", groups,
                  has_bias ? "_bias_" : "_", layout == Layout::kNHWC ? "nhwc" : "nchw");
  if (has_residual) absl::StrAppend(&out, "_res");
  if (activation == Activation::kClip) {
    // %.9g round-trips a float: distinct bounds never share a key.
    absl::StrAppend(&out, absl::StrFormat("_clip%.9g:%.9g", clip_min, clip_max));
  } else if (activation != Activation::kNone) {
    absl::StrAppend(&out, "_", ActivationName(activation));
  }
  if (dtype != DataType::kFp32) absl::StrAppend(&out, "_", absl::AsciiStrToLower(DataTypeName(dtype)));
  if (output_dtype != dtype) absl::StrAppend(&out, "_outfp32");
  return out;
}

std::string Conv2dParams::ToString() const { return absl::StrCat("mb", n, "_", ShapeClass()); }

bool Conv2dParams::SameGeometry(const Conv2dParams& o) const {
  return c == o.c && h == o.h && w == o.w && k == o.k && r == o.r && s == o.s &&
         stride_h == o.stride_h && stride_w == o.stride_w && pad_top == o.pad_top &&
         pad_bottom == o.pad_bottom && pad_left == o.pad_left && pad_right == o.pad_right &&
         dilation_h == o.dilation_h && dilation_w == o.dilation_w && groups == o.groups &&
         has_bias == o.has_bias && layout == o.layout && has_residual == o.has_residual &&
         activation == o.activation && clip_min == o.clip_min && clip_max == o.clip_max &&
         dtype == o.dtype && output_dtype == o.output_dtype;
}

}  // namespace sparkle
