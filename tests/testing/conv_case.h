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
  p.stride_h = p.stride_w = stride, p.pad_h = p.pad_w = pad, p.groups = groups;
  p.has_bias = bias, p.layout = layout;
  return p;
}

struct ConvCase {
  Conv2dParams params;
  std::vector<float> input, weight, bias, expected;

  explicit ConvCase(const Conv2dParams& p, uint32_t seed = 1) : params(p) {
    input = RandomFloats(p.input_elements(), seed);
    weight = RandomFloats(p.weight_elements(), seed + 1);
    if (p.has_bias) bias = RandomFloats(p.k, seed + 2);
    expected.resize(p.output_elements());
    Conv2dRef(p, input.data(), weight.data(), p.has_bias ? bias.data() : nullptr,
              expected.data());
  }

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
  // of raw bytes; reversed: inputs listed bias, weight, input.
  inference::ModelInferRequest Request(bool typed = false, bool reversed = false) const {
    const Conv2dParams& p = params;
    inference::ModelInferRequest r;
    r.set_model_name("conv2d");
    r.set_id("case");
    auto set = [&r](const char* key, int64_t v) {
      (*r.mutable_parameters())[key].set_int64_param(v);
    };
    set("stride_h", p.stride_h), set("stride_w", p.stride_w);
    set("pad_h", p.pad_h), set("pad_w", p.pad_w);
    set("dilation_h", p.dilation_h), set("dilation_w", p.dilation_w);
    set("groups", p.groups);
    const bool nhwc = p.layout == Layout::kNHWC;
    auto add_input = [&] {
      AddTensor(&r, "input",
                nhwc ? std::vector<int64_t>{p.n, p.h, p.w, p.c}
                     : std::vector<int64_t>{p.n, p.c, p.h, p.w},
                input, typed);
      if (nhwc) {
        (*r.mutable_inputs(r.inputs_size() - 1)->mutable_parameters())["layout"]
            .set_string_param("NHWC");
      }
    };
    auto add_weight = [&] {
      AddTensor(&r, "weight", {p.k, p.c / p.groups, p.r, p.s}, weight, typed);
    };
    auto add_bias = [&] {
      if (p.has_bias) AddTensor(&r, "bias", {p.k}, bias, typed);
    };
    if (reversed) {
      add_bias(), add_weight(), add_input();
    } else {
      add_input(), add_weight(), add_bias();
    }
    return r;
  }

  // Empty when the response holds the expected output; otherwise what differs.
  std::string Check(const inference::ModelInferResponse& resp) const {
    return CheckRawOutput(resp, expected);
  }
};

}  // namespace sparkle::testing
