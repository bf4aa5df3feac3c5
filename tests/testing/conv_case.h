// ConvCase: one conv2d request over the KServe v2 wire (random tensors, every geometry
// parameter set explicitly) and its expected output from Conv2dRef, for the tests that talk to
// a server (in-process or a daemon). Header-only, so that sparkle_testing needs no protobuf.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/core/conv2d_params.h"
#include "engine/cpu/conv2d_ref.h"
#include "inference/grpc_predict_v2.pb.h"
#include "tests/testing/infer_check.h"
#include "tests/testing/shape_table.h"

namespace sparkle::testing {

// Conv2dParams from the usual handful of numbers (square kernel, same stride/pad both ways).
inline Conv2dParams ConvShape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t r,
                              int64_t stride = 1, int64_t pad = 0, int64_t groups = 1,
                              bool bias = false, Layout layout = Layout::kNCHW) {
  Conv2dParams p;
  p.n = n, p.c = c, p.h = h, p.w = w, p.k = k, p.r = r, p.s = r;
  p.stride_h = p.stride_w = stride, p.SetPad(pad, pad), p.groups = groups;
  p.has_bias = bias, p.layout = layout;
  return p;
}

// params may carry an epilogue (has_residual, activation, clip bounds) and datatypes (dtype,
// output_dtype): the request then sends `residual`, the `activation`/`clip_*` parameters, the
// tensors as raw little-endian bytes of dtype (BF16/FP16 have no typed contents) and asks for
// the output's datatype when it differs from dtype.
struct ConvCase {
  Conv2dParams params;
  // The values sent, already rounded to params.dtype (so the oracle sees exactly them), and the
  // oracle's output widened to float from params.output_dtype.
  std::vector<float> input, weight, bias, residual, expected;

  explicit ConvCase(const Conv2dParams& p, uint32_t seed = 1) : params(p) {
    input = Rounded(RandomFloats(p.input_elements(), seed));
    weight = Rounded(RandomFloats(p.weight_elements(), seed + 1));
    if (p.has_bias) bias = Rounded(RandomFloats(p.k, seed + 2));
    if (p.has_residual) residual = Rounded(RandomFloats(p.residual_elements(), seed + 3));
    const std::string in = Bytes(input), w = Bytes(weight), b = Bytes(bias), res = Bytes(residual);
    std::string out(static_cast<size_t>(p.output_elements() * ElementSize(p.output_dtype)), '\0');
    Conv2dRef(p, in.data(), w.data(), p.has_bias ? b.data() : nullptr, out.data(),
              p.has_residual ? res.data() : nullptr);
    expected.resize(p.output_elements());
    WidenToFloat(p.output_dtype, out.data(), expected.data(), p.output_elements());
  }

  // v rounded to params.dtype (and back to float).
  std::vector<float> Rounded(std::vector<float> v) const {
    if (params.dtype == DataType::kFp32) return v;
    std::string bits = Bytes(v);
    WidenToFloat(params.dtype, bits.data(), v.data(), static_cast<int64_t>(v.size()));
    return v;
  }
  // v as raw little-endian bytes of params.dtype.
  std::string Bytes(const std::vector<float>& v) const {
    std::string out(v.size() * static_cast<size_t>(ElementSize(params.dtype)), '\0');
    NarrowFromFloat(params.dtype, v.data(), out.data(), static_cast<int64_t>(v.size()));
    return out;
  }

  // An FP32 tensor (typed: in fp32_contents, else as a raw entry).
  static void AddTensor(inference::ModelInferRequest* r, const char* name,
                        std::vector<int64_t> shape, const std::vector<float>& data, bool typed) {
    auto* t = r->add_inputs();
    t->set_name(name);
    t->set_datatype("FP32");
    for (int64_t d : shape) t->add_shape(d);
    if (typed) {
      t->mutable_contents()->mutable_fp32_contents()->Add(data.begin(), data.end());
    } else {
      r->add_raw_input_contents()->assign(reinterpret_cast<const char*>(data.data()),
                                          data.size() * sizeof(float));
    }
  }

  // Model "conv2d", id "case", every geometry parameter as int64. typed: fp32_contents instead
  // of raw bytes (FP32 only); reversed: inputs listed residual, bias, weight, input.
  inference::ModelInferRequest Request(bool typed = false, bool reversed = false) const {
    const Conv2dParams& p = params;
    inference::ModelInferRequest r;
    r.set_model_name("conv2d");
    r.set_id("case");
    auto set = [&r](const char* key, int64_t v) {
      (*r.mutable_parameters())[key].set_int64_param(v);
    };
    set("stride_h", p.stride_h), set("stride_w", p.stride_w);
    if (p.pad_top == p.pad_bottom && p.pad_left == p.pad_right) {
      set("pad_h", p.pad_top), set("pad_w", p.pad_left);
    } else {
      set("pad_top", p.pad_top), set("pad_bottom", p.pad_bottom);
      set("pad_left", p.pad_left), set("pad_right", p.pad_right);
    }
    set("dilation_h", p.dilation_h), set("dilation_w", p.dilation_w);
    set("groups", p.groups);
    if (p.activation != Activation::kNone) {
      (*r.mutable_parameters())["activation"].set_string_param(ActivationName(p.activation));
      if (p.activation == Activation::kClip) {
        (*r.mutable_parameters())["clip_min"].set_double_param(p.clip_min);
        (*r.mutable_parameters())["clip_max"].set_double_param(p.clip_max);
      }
    }
    if (p.output_dtype != p.dtype) {
      auto* out = r.add_outputs();
      out->set_name("output");
      (*out->mutable_parameters())["datatype"].set_string_param(DataTypeName(p.output_dtype));
    }
    const bool nhwc = p.layout == Layout::kNHWC;
    auto add = [&](const char* name, std::vector<int64_t> shape, const std::vector<float>& data) {
      if (p.dtype == DataType::kFp32) {
        AddTensor(&r, name, std::move(shape), data, typed);
      } else {
        auto* t = r.add_inputs();
        t->set_name(name);
        t->set_datatype(DataTypeName(p.dtype));
        for (int64_t d : shape) t->add_shape(d);
        *r.add_raw_input_contents() = Bytes(data);
      }
      if (nhwc && (std::string(name) == "input" || std::string(name) == "residual")) {
        (*r.mutable_inputs(r.inputs_size() - 1)->mutable_parameters())["layout"]
            .set_string_param("NHWC");
      }
    };
    auto add_input = [&] {
      add("input",
          nhwc ? std::vector<int64_t>{p.n, p.h, p.w, p.c} : std::vector<int64_t>{p.n, p.c, p.h, p.w},
          input);
    };
    auto add_weight = [&] { add("weight", {p.k, p.c / p.groups, p.r, p.s}, weight); };
    auto add_bias = [&] {
      if (p.has_bias) add("bias", {p.k}, bias);
    };
    auto add_residual = [&] {
      if (!p.has_residual) return;
      add("residual",
          nhwc ? std::vector<int64_t>{p.n, p.p(), p.q(), p.k}
               : std::vector<int64_t>{p.n, p.k, p.p(), p.q()},
          residual);
    };
    if (reversed) {
      add_residual(), add_bias(), add_weight(), add_input();
    } else {
      add_input(), add_weight(), add_bias(), add_residual();
    }
    return r;
  }

  // Relative L2 error accepted against the oracle (docs/protocol.md "Tolerances"): 1e-5 for an
  // FP32 output (FP32 accumulation vs double); for a 16-bit output, rounding to it can differ by
  // one unit in the last place from the oracle's rounding of the double result: 2^-8 (BF16),
  // 2^-11 (FP16).
  double Tolerance() const {
    switch (params.output_dtype) {
      case DataType::kBf16:
        return 1.0 / 256;
      case DataType::kFp16:
        return 1.0 / 2048;
      default:
        return 1e-5;
    }
  }

  // Empty when the response holds the expected output (its datatype and values); otherwise
  // what differs.
  std::string Check(const inference::ModelInferResponse& resp) const {
    if (params.output_dtype == DataType::kFp32) return CheckRawOutput(resp, expected);
    if (resp.outputs_size() != 1 || resp.outputs(0).datatype() != DataTypeName(params.output_dtype)) {
      return "wrong output datatype";
    }
    if (resp.raw_output_contents_size() != 1) return "no raw output";
    const std::string& raw = resp.raw_output_contents(0);
    if (raw.size() != expected.size() * static_cast<size_t>(ElementSize(params.output_dtype))) {
      return "wrong output byte count";
    }
    std::vector<float> got(expected.size());
    WidenToFloat(params.output_dtype, raw.data(), got.data(), static_cast<int64_t>(got.size()));
    const double err = RelativeL2Error(got.data(), expected.data(), static_cast<int64_t>(got.size()));
    return err <= Tolerance() ? "" : absl::StrCat("relative L2 error ", err);
  }
};

}  // namespace sparkle::testing
