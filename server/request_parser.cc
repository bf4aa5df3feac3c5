#include "server/request_parser.h"

#include <cstring>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace sparkle {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using InputTensor = inference::ModelInferRequest::InferInputTensor;

// Parameters that generic KServe/Triton clients attach; accepted and ignored (docs/protocol.md).
bool IsIgnoredKey(absl::string_view key) {
  static const auto* keys = new absl::flat_hash_set<absl::string_view>{
      "sequence_id",   "sequence_start", "sequence_end", "binary_data_output",
      "binary_data",   "binary_data_size", "classification", "headers",
      "triton_enable_empty_final_response"};
  return keys->contains(key);
}

absl::StatusOr<int64_t> IntParam(absl::string_view key, const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kInt64Param:
      return p.int64_param();
    case InferParameter::kUint64Param:
      if (p.uint64_param() > static_cast<uint64_t>(INT64_MAX)) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter ", key, " is out of range: ", p.uint64_param()));
      }
      return static_cast<int64_t>(p.uint64_param());
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("parameter ", key, " must be an int64_param or uint64_param"));
  }
}

absl::StatusOr<std::string> StringParam(absl::string_view key, const InferParameter& p) {
  if (p.parameter_choice_case() != InferParameter::kStringParam) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", key, " must be a string_param"));
  }
  return p.string_param();
}

// Geometry from the request parameters. A shorthand (stride, pad, dilation) sets both axes;
// an explicit _h/_w key overrides it, whatever the order in the map.
struct Geometry {
  std::optional<int64_t> stride, pad, dilation;
  std::optional<int64_t> stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups = 1;
};

absl::Status ParseRequestParameters(const ModelInferRequest& request, Geometry* g,
                                    ParsedInferRequest* out) {
  for (const auto& [key, value] : request.parameters()) {
    std::optional<int64_t>* slot = nullptr;
    if (key == "stride") slot = &g->stride;
    else if (key == "pad") slot = &g->pad;
    else if (key == "dilation") slot = &g->dilation;
    else if (key == "stride_h") slot = &g->stride_h;
    else if (key == "stride_w") slot = &g->stride_w;
    else if (key == "pad_h") slot = &g->pad_h;
    else if (key == "pad_w") slot = &g->pad_w;
    else if (key == "dilation_h") slot = &g->dilation_h;
    else if (key == "dilation_w") slot = &g->dilation_w;
    if (slot != nullptr) {
      SPARKLE_ASSIGN_OR_RETURN(*slot, IntParam(key, value));
    } else if (key == "groups") {
      SPARKLE_ASSIGN_OR_RETURN(g->groups, IntParam(key, value));
    } else if (key == "priority") {
      SPARKLE_ASSIGN_OR_RETURN(int64_t priority, IntParam(key, value));
      if (priority < 0 || priority > 16) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter priority must be in [0, 16]; was ", priority));
      }
      out->priority = static_cast<int>(priority);
    } else if (key == "timeout") {
      SPARKLE_ASSIGN_OR_RETURN(int64_t timeout_us, IntParam(key, value));
      if (timeout_us < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("parameter timeout (µs) must be >= 0; was ", timeout_us));
      }
      // Triton: 0 means no timeout.
      if (timeout_us > 0) out->queue_timeout = absl::Microseconds(timeout_us);
    } else if (key == "weight_id") {
      SPARKLE_ASSIGN_OR_RETURN(out->weight_id, StringParam(key, value));
    } else if (key == "device") {
      SPARKLE_ASSIGN_OR_RETURN(std::string device, StringParam(key, value));
      absl::StatusOr<DeviceRequest> parsed = ParseDeviceRequest(device);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("parameter ", parsed.status().message()));
      }
      out->device = *parsed;
    } else if (!IsIgnoredKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown request parameter '", key,
          "' (known: stride, stride_h, stride_w, pad, pad_h, pad_w, dilation, dilation_h, "
          "dilation_w, groups, priority, timeout, device, weight_id)"));
    }
  }
  return absl::OkStatus();
}

struct NamedInputs {
  const InputTensor* input = nullptr;
  const InputTensor* weight = nullptr;
  const InputTensor* bias = nullptr;
  int input_index = -1, weight_index = -1, bias_index = -1;
};

// `by_id`: the request names registered weights, so it must send neither weight nor bias.
absl::StatusOr<NamedInputs> MatchInputs(const ModelInferRequest& request, bool by_id) {
  NamedInputs named;
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& t = request.inputs(i);
    const InputTensor** slot = nullptr;
    int* index = nullptr;
    if (t.name() == "input") {
      slot = &named.input, index = &named.input_index;
    } else if (t.name() == "weight") {
      slot = &named.weight, index = &named.weight_index;
    } else if (t.name() == "bias") {
      slot = &named.bias, index = &named.bias_index;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown input tensor '", t.name(), "' (the conv2d model takes input, weight, bias)"));
    }
    if (*slot != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(), "' is given twice"));
    }
    *slot = &t;
    *index = i;
    if (t.datatype() != "FP32") {
      return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(),
                                                     "' has datatype '", t.datatype(),
                                                     "'; the conv2d model takes FP32"));
    }
  }
  if (named.input == nullptr) {
    return absl::InvalidArgumentError("missing input tensor 'input' ([N, C, H, W], FP32)");
  }
  if (by_id && (named.weight != nullptr || named.bias != nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the request names registered weights (weight_id) and also sends the '",
        named.weight != nullptr ? "weight" : "bias",
        "' input; send one or the other (a registration carries its own bias)"));
  }
  if (!by_id && named.weight == nullptr) {
    return absl::InvalidArgumentError(
        "missing input tensor 'weight' ([K, C/groups, R, S], FP32) or weight_id parameter");
  }
  return named;
}

absl::Status CheckShape(const InputTensor& t, int rank, absl::string_view layout_hint) {
  if (t.shape_size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(), "' must have rank ",
                                                   rank, " ", layout_hint, "; its shape is [",
                                                   absl::StrJoin(t.shape(), ", "), "]"));
  }
  for (int64_t d : t.shape()) {
    if (d < 1 || d > Conv2dParams::kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("input tensor '", t.name(), "' shape [",
                                                     absl::StrJoin(t.shape(), ", "),
                                                     "] has a dimension outside [1, 2^31 - 1]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Layout> ParseLayout(const InputTensor& input) {
  Layout layout = Layout::kNCHW;
  for (const auto& [key, value] : input.parameters()) {
    if (key == "layout") {
      SPARKLE_ASSIGN_OR_RETURN(std::string s, StringParam("layout", value));
      if (s == "NHWC") {
        layout = Layout::kNHWC;
      } else if (s != "NCHW") {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor parameter layout must be NCHW or NHWC; was '", s, "'"));
      }
    } else if (!IsIgnoredKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown parameter '", key,
                                                     "' on input tensor 'input' (known: layout)"));
    }
  }
  return layout;
}

// True when contents uses a typed field other than fp32_contents.
bool HasNonFp32Contents(const InputTensor& t) {
  const auto& c = t.contents();
  return c.bool_contents_size() || c.int_contents_size() || c.int64_contents_size() ||
         c.uint_contents_size() || c.uint64_contents_size() || c.fp64_contents_size() ||
         c.bytes_contents_size();
}

bool HasTypedContents(const InputTensor& t) {
  return HasNonFp32Contents(t) || t.contents().fp32_contents_size() > 0;
}

// Points *data at the tensor's `elements` floats, from raw_input_contents[index] or from its
// typed contents; INVALID_ARGUMENT when the byte count does not match the shape.
absl::Status TensorData(const ModelInferRequest& request, const InputTensor& t, int index,
                        int64_t elements, const float** data) {
  if (request.raw_input_contents_size() > 0) {
    const std::string& raw = request.raw_input_contents(index);
    if (static_cast<int64_t>(raw.size()) != elements * 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input tensor '", t.name(), "' has shape [", absl::StrJoin(t.shape(), ", "), "] = ",
          elements, " FP32 elements (", elements * 4, " bytes), but raw_input_contents[", index,
          "] holds ", raw.size(), " bytes"));
    }
    // The bytes are little-endian FP32, which is this machine's float. std::string storage is
    // at least 8-byte aligned (heap, or the in-object buffer), enough for float.
    *data = reinterpret_cast<const float*>(raw.data());
    return absl::OkStatus();
  }
  const auto& c = t.contents();
  if (HasNonFp32Contents(t)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input tensor '", t.name(), "' is FP32 but its contents use another type's field; "
                                    "put the values in contents.fp32_contents"));
  }
  if (c.fp32_contents_size() != elements) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input tensor '", t.name(), "' has shape [", absl::StrJoin(t.shape(), ", "), "] = ",
        elements, " elements, but contents.fp32_contents holds ", c.fp32_contents_size(),
        c.fp32_contents_size() == 0 ? " (and no raw_input_contents were sent)" : ""));
  }
  *data = c.fp32_contents().data();
  return absl::OkStatus();
}


}  // namespace

absl::Status CheckModel(const std::string& name, const std::string& version) {
  if (name != kModelName) {
    return absl::NotFoundError(
        absl::StrCat("unknown model '", name, "'; this server serves '", kModelName, "'"));
  }
  if (!version.empty() && version != kModelVersion) {
    return absl::NotFoundError(absl::StrCat("unknown version '", version, "' of model '", name,
                                            "'; available: ", kModelVersion));
  }
  return absl::OkStatus();
}

absl::StatusOr<ParsedInferRequest> ParseInferRequest(const ModelInferRequest& request,
                                                     const ParseLimits& limits,
                                                     WeightRegistry* registry) {
  const size_t request_bytes = request.ByteSizeLong();
  if (static_cast<int64_t>(request_bytes) > limits.max_request_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the request is ", request_bytes, " bytes, above the ", limits.max_request_bytes,
        "-byte message limit max_message_bytes"));
  }
  SPARKLE_RETURN_IF_ERROR(CheckModel(request.model_name(), request.model_version()));
  ParsedInferRequest out;
  Geometry g;
  SPARKLE_RETURN_IF_ERROR(ParseRequestParameters(request, &g, &out));
  SPARKLE_ASSIGN_OR_RETURN(NamedInputs named, MatchInputs(request, !out.weight_id.empty()));

  for (const auto& requested : request.outputs()) {
    if (requested.name() != "output") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown requested output '", requested.name(), "' (the conv2d model has 'output')"));
    }
  }
  if (request.raw_input_contents_size() > 0) {
    if (request.raw_input_contents_size() != request.inputs_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "raw_input_contents has ", request.raw_input_contents_size(),
          " entries but the request lists ", request.inputs_size(), " inputs (one entry each)"));
    }
    for (const InputTensor& t : request.inputs()) {
      if (HasTypedContents(t)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input tensor '", t.name(),
            "' has contents while raw_input_contents is used; send one or the other"));
      }
    }
  }

  SPARKLE_ASSIGN_OR_RETURN(Layout layout, ParseLayout(*named.input));
  SPARKLE_RETURN_IF_ERROR(CheckShape(*named.input, 4,
                                     layout == Layout::kNHWC ? "[N, H, W, C]" : "[N, C, H, W]"));
  std::vector<int64_t> ws;  // [K, C/groups, R, S]
  if (named.weight != nullptr) {
    SPARKLE_RETURN_IF_ERROR(CheckShape(*named.weight, 4, "[K, C/groups, R, S]"));
    for (const auto& [key, value] : named.weight->parameters()) {
      if (!IsIgnoredKey(key)) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown parameter '", key, "' on input tensor 'weight'"));
      }
    }
    ws.assign(named.weight->shape().begin(), named.weight->shape().end());
  } else {
    if (registry == nullptr) {
      return absl::NotFoundError(absl::StrCat("no registered weights with weight_id '",
                                              out.weight_id, "' (no weights registry)"));
    }
    SPARKLE_ASSIGN_OR_RETURN(out.registered_weight, registry->Acquire(out.weight_id));
    const RegisteredWeight& w = *out.registered_weight;
    ws.assign(w.shape().begin(), w.shape().end());
    out.weight = w.weight();
    out.bias = w.bias();
  }

  Conv2dParams& p = out.params;
  p.layout = layout;
  const auto& is = named.input->shape();
  p.n = is[0];
  p.c = layout == Layout::kNHWC ? is[3] : is[1];
  p.h = layout == Layout::kNHWC ? is[1] : is[2];
  p.w = layout == Layout::kNHWC ? is[2] : is[3];
  p.k = ws[0];
  p.r = ws[2];
  p.s = ws[3];
  p.stride_h = g.stride_h.value_or(g.stride.value_or(1));
  p.stride_w = g.stride_w.value_or(g.stride.value_or(1));
  p.pad_h = g.pad_h.value_or(g.pad.value_or(0));
  p.pad_w = g.pad_w.value_or(g.pad.value_or(0));
  p.dilation_h = g.dilation_h.value_or(g.dilation.value_or(1));
  p.dilation_w = g.dilation_w.value_or(g.dilation.value_or(1));
  p.groups = g.groups;
  p.has_bias = named.bias != nullptr ||
               (out.registered_weight != nullptr && out.registered_weight->has_bias());
  SPARKLE_RETURN_IF_ERROR(p.Validate());
  if (ws[1] * p.groups != p.c) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight shape [", absl::StrJoin(ws, ", "), "] has C/groups=", ws[1],
        " but the input has C=", p.c, " and groups=", p.groups, " (expected C/groups=",
        p.c / p.groups, ")"));
  }
  if (named.bias != nullptr) {
    SPARKLE_RETURN_IF_ERROR(CheckShape(*named.bias, 1, "[K]"));
    if (named.bias->shape(0) != p.k) {
      return absl::InvalidArgumentError(absl::StrCat("bias shape [", named.bias->shape(0),
                                                     "] does not match K=", p.k,
                                                     " of the weight"));
    }
  }
  // The whole response message counts against gRPC's send limit, not just the output bytes:
  // a response over it would be computed in full and then refused by gRPC.
  const int64_t output_bytes = p.output_elements() * 4;
  const int64_t response_bytes =
      output_bytes + kResponseOverheadBytes + static_cast<int64_t>(request.id().size());
  if (response_bytes > limits.max_response_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the response would be ", response_bytes, " bytes (", output_bytes, " of output), above the ",
        limits.max_response_bytes, "-byte message limit max_message_bytes"));
  }
  SPARKLE_RETURN_IF_ERROR(
      TensorData(request, *named.input, named.input_index, p.input_elements(), &out.input));
  if (named.weight != nullptr) {
    SPARKLE_RETURN_IF_ERROR(
        TensorData(request, *named.weight, named.weight_index, p.weight_elements(), &out.weight));
  }
  if (named.bias != nullptr) {
    SPARKLE_RETURN_IF_ERROR(TensorData(request, *named.bias, named.bias_index, p.k, &out.bias));
  }
  return out;
}

}  // namespace sparkle
