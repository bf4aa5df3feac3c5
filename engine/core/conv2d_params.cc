#include "engine/core/conv2d_params.h"

#include "absl/strings/str_cat.h"

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

int64_t OutDim(int64_t in, int64_t pad, int64_t dilation, int64_t kernel, int64_t stride) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
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
      {"pad_h", pad_h, 0},   {"pad_w", pad_w, 0},   {"dilation_h", dilation_h, 1},
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
  // Every value is < 2^31 here, so the padded extents and dilated kernels fit in int64; they
  // must also fit the int oneDNN computes them in.
  const int64_t span_h = dilation_h * (r - 1) + 1, span_w = dilation_w * (s - 1) + 1;
  const struct {
    const char* name;
    int64_t value;
  } extents[] = {{"padded input height H+2*pad_h", h + 2 * pad_h},
                 {"padded input width W+2*pad_w", w + 2 * pad_w},
                 {"dilated kernel height (R-1)*dilation_h+1", span_h},
                 {"dilated kernel width (S-1)*dilation_w+1", span_w}};
  for (const auto& e : extents) {
    if (e.value > kMaxDim) return Invalid(e.name, e.value, "<= 2^31-1");
  }
  if (span_h > h + 2 * pad_h) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel height R=", r, " (dilation ", dilation_h, ", extent ", span_h,
        ") is larger than the padded input height H+2*pad_h=", h + 2 * pad_h));
  }
  if (span_w > w + 2 * pad_w) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kernel width S=", s, " (dilation ", dilation_w, ", extent ", span_w,
        ") is larger than the padded input width W+2*pad_w=", w + 2 * pad_w));
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
  const int64_t out_p = OutDim(h, pad_h, dilation_h, r, stride_h);
  const int64_t out_q = OutDim(w, pad_w, dilation_w, s, stride_w);
  if (!CheckedProduct({n, k, out_p, out_q, 4}, &elems)) {
    return absl::InvalidArgumentError(absl::StrCat("output N*K*P*Q overflows: N=", n, " K=", k,
                                                   " P=", out_p, " Q=", out_q));
  }
  if (!CheckedProduct({n, c, h + 2 * pad_h, w + 2 * pad_w, 4}, &elems)) {
    return absl::InvalidArgumentError(
        absl::StrCat("padded input N*C*(H+2*pad_h)*(W+2*pad_w) overflows: N=", n, " C=", c,
                     " H+2*pad_h=", h + 2 * pad_h, " W+2*pad_w=", w + 2 * pad_w));
  }
  if (!CheckedProduct({c / groups, r, s, out_p, out_q, 4}, &elems)) {
    return absl::InvalidArgumentError(
        absl::StrCat("im2col (C/groups)*R*S*P*Q overflows: C/groups=", c / groups, " R=", r,
                     " S=", s, " P=", out_p, " Q=", out_q));
  }
  return absl::OkStatus();
}

int64_t Conv2dParams::p() const { return OutDim(h, pad_h, dilation_h, r, stride_h); }
int64_t Conv2dParams::q() const { return OutDim(w, pad_w, dilation_w, s, stride_w); }

int64_t Conv2dParams::total_bytes() const {
  return 4 * (input_elements() + weight_elements() + bias_elements() + output_elements());
}

int64_t Conv2dParams::padded_input_bytes() const {
  return 4 * n * c * (h + 2 * pad_h) * (w + 2 * pad_w);
}

int64_t Conv2dParams::im2col_bytes() const { return 4 * (c / groups) * r * s * p() * q(); }

double Conv2dParams::flops() const {
  return 2.0 * static_cast<double>(n) * static_cast<double>(k) * static_cast<double>(p()) *
         static_cast<double>(q()) * static_cast<double>(c / groups) * static_cast<double>(r) *
         static_cast<double>(s);
}

std::string Conv2dParams::ShapeClass() const {
  return absl::StrCat("ic", c, "ih", h, "iw", w, "_oc", k, "kh", r, "kw", s, "_sh", stride_h,
                      "sw", stride_w, "_ph", pad_h, "pw", pad_w, "_dh", dilation_h, "dw",
                      dilation_w, "_g", groups, has_bias ? "_bias_" : "_", 
                      layout == Layout::kNHWC ? "nhwc" : "nchw");
}

std::string Conv2dParams::ToString() const { return absl::StrCat("mb", n, "_", ShapeClass()); }

bool Conv2dParams::SameGeometry(const Conv2dParams& o) const {
  return c == o.c && h == o.h && w == o.w && k == o.k && r == o.r && s == o.s &&
         stride_h == o.stride_h && stride_w == o.stride_w && pad_h == o.pad_h &&
         pad_w == o.pad_w && dilation_h == o.dilation_h && dilation_w == o.dilation_w &&
         groups == o.groups && has_bias == o.has_bias && layout == o.layout;
}

}  // namespace sparkle
