#include "client/infer_request.h"

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/arg_parse.h"
#include "base/status_macros.h"

namespace sparkle::client {
namespace {

absl::Status AddInput(absl::string_view name, NpyArray array,
                      inference::ModelInferRequest* request) {
  if (array.data.size() != static_cast<uint64_t>(array.NumElements()) * sizeof(float)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' of shape ", FormatShape(array.shape), " needs ",
                     array.NumElements() * sizeof(float), " bytes; has ", array.data.size()));
  }
  auto* tensor = request->add_inputs();
  tensor->set_name(std::string(name));
  tensor->set_datatype("FP32");
  for (int64_t d : array.shape) tensor->add_shape(d);
  *request->add_raw_input_contents() = std::move(array.data);
  return absl::OkStatus();
}

void SetInt64(absl::string_view key, int64_t value, inference::ModelInferRequest* request) {
  (*request->mutable_parameters())[std::string(key)].set_int64_param(value);
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

absl::StatusOr<Layout> ParseLayout(absl::string_view text) {
  const std::string upper = absl::AsciiStrToUpper(text);
  if (upper == "NCHW") return Layout::kNCHW;
  if (upper == "NHWC") return Layout::kNHWC;
  return absl::InvalidArgumentError(
      absl::StrCat("layout must be NCHW or NHWC; was \"", text, "\""));
}

absl::StatusOr<inference::ModelInferRequest> BuildInferRequest(
    InferInputs inputs, const InferRequestOptions& options) {
  inference::ModelInferRequest request;
  request.set_model_name(std::string(kModelName));
  if (!options.id.empty()) request.set_id(options.id);
  SPARKLE_RETURN_IF_ERROR(AddInput("input", std::move(inputs.input), &request));
  if (options.layout == Layout::kNHWC) {
    (*request.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("NHWC");
  }
  if (options.weight_id.empty()) {
    SPARKLE_RETURN_IF_ERROR(AddInput("weight", std::move(inputs.weight), &request));
    if (inputs.bias.has_value()) {
      SPARKLE_RETURN_IF_ERROR(AddInput("bias", std::move(*inputs.bias), &request));
    }
  } else {
    (*request.mutable_parameters())["weight_id"].set_string_param(options.weight_id);
  }
  const ConvGeometry& g = options.geometry;
  SetInt64("stride_h", g.stride_h, &request);
  SetInt64("stride_w", g.stride_w, &request);
  SetInt64("pad_h", g.pad_h, &request);
  SetInt64("pad_w", g.pad_w, &request);
  SetInt64("dilation_h", g.dilation_h, &request);
  SetInt64("dilation_w", g.dilation_w, &request);
  SetInt64("groups", g.groups, &request);
  if (!options.device.empty()) {
    (*request.mutable_parameters())["device"].set_string_param(options.device);
  }
  for (const auto& [key, value] : options.extra_params) SetInt64(key, value, &request);
  return request;
}

int64_t RequestPayloadBytes(const inference::ModelInferRequest& request) {
  int64_t bytes = 0;
  for (const std::string& raw : request.raw_input_contents()) bytes += raw.size();
  return bytes;
}

absl::StatusOr<NpyArray> TakeOutput(inference::ModelInferResponse* response) {
  int index = -1;
  for (int i = 0; i < response->outputs_size(); ++i) {
    if (response->outputs(i).name() == "output") index = i;
  }
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the response has no output named 'output' (it has ", response->outputs_size(),
        " outputs)"));
  }
  auto* tensor = response->mutable_outputs(index);
  if (tensor->datatype() != "FP32") {
    return absl::InvalidArgumentError(
        absl::StrCat("output 'output' has datatype ", tensor->datatype(), "; expected FP32"));
  }
  NpyArray array;
  int64_t elements = 1;
  for (int64_t d : tensor->shape()) {
    if (d < 0 || (d > 0 && elements > (int64_t{1} << 62) / d)) {
      return absl::InvalidArgumentError(absl::StrCat("output 'output' has an invalid shape ",
                                                     FormatShape(tensor->shape())));
    }
    elements *= d;
    array.shape.push_back(d);
  }
  const uint64_t want = static_cast<uint64_t>(elements) * sizeof(float);
  // raw_output_contents, when used, has one entry per output in the order of `outputs`.
  if (response->raw_output_contents_size() > 0) {
    if (index >= response->raw_output_contents_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the response has ", response->raw_output_contents_size(),
          " raw_output_contents for ", response->outputs_size(), " outputs"));
    }
    std::string* raw = response->mutable_raw_output_contents(index);
    if (raw->size() != want) {
      return absl::InvalidArgumentError(absl::StrCat("output 'output' of shape ",
                                                     FormatShape(array.shape), " needs ", want,
                                                     " bytes; the response has ", raw->size()));
    }
    array.data = std::move(*raw);
    return array;
  }
  const auto& values = tensor->contents().fp32_contents();
  if (static_cast<uint64_t>(values.size()) * sizeof(float) != want) {
    return absl::InvalidArgumentError(absl::StrCat("output 'output' of shape ",
                                                   FormatShape(array.shape), " needs ", elements,
                                                   " values; the response has ", values.size()));
  }
  array.data.assign(reinterpret_cast<const char*>(values.data()), want);
  return array;
}

NpyArray RandomArray(std::vector<int64_t> shape, uint64_t seed) {
  NpyArray array;
  array.shape = std::move(shape);
  const int64_t n = array.NumElements();
  array.data.resize(static_cast<size_t>(n) * sizeof(float));
  uint64_t state = seed;
  char* out = array.data.data();
  for (int64_t i = 0; i < n; ++i) {
    // The top 24 bits give every float in [0, 1) on a 2^-24 grid exactly; scaled to [-1, 1).
    const float unit = static_cast<float>(SplitMix64(&state) >> 40) * (1.0f / 16777216.0f);
    const float value = 2.0f * unit - 1.0f;
    std::memcpy(out + i * sizeof(float), &value, sizeof(float));
  }
  return array;
}

}  // namespace sparkle::client
